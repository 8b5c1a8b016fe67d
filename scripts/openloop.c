/* openloop.c: an open-loop HTTP/1.1 load generator for one loopback server.
 *
 * Requests leave at their scheduled times (constant spacing, or Poisson with a seed) whatever
 * the answers, and every latency runs from the scheduled time, so queueing in the server or for
 * a connection is never hidden (no coordinated omission). One thread, epoll, non-blocking
 * sockets; keep-alive connections with one request outstanding each, the least recently used
 * idle one taken first (--reuse fifo: load spread over the pool like many clients, and a
 * connection just refused is not at once reused). A request due when no connection is idle
 * opens one (up to --max-connections); past the maximum it waits for the first to come free,
 * still timed from its schedule, and is counted in "waited". A request not
 * answered within --timeout of its scheduled time is a timeout (its connection is closed).
 * "lag" is how late the generator itself got to each request (sent it, opened a connection for
 * it, or queued it): if it grows, the generator is saturated and the figures are its own.
 *
 * Responses are parsed for the status code and Content-Length (a response without one ends at
 * the connection's close if it says "Connection: close", else has no body); a "Connection:
 * close" answer closes the connection and the next request opens another. Percentiles are exact:
 * every latency is kept (8 bytes a request) and sorted at the end, nearest rank (the smallest
 * value with at least p % of the values at or below it). Only 127.0.0.1 is accepted as a host.
 *
 * Output: one JSON object on stdout. Build: gcc -O2 -Wall -Wextra -o openloop openloop.c -lm
 * Used by scripts/bench_overload.py through loadtests/cgen.py.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

enum state { FREE, CONNECTING, IDLE, BUSY };
struct conn { /* one connection; req >= 0 while a request is assigned to it */
    int fd; enum state st; uint32_t events; long req; size_t woff, len, cap; char *buf;
};
struct vec { double *v; size_t n, cap; }; /* a growable array of values (ms) */
enum { C2XX, C503, COTHER, CLASSES };
static const char *class_name[CLASSES] = {"2xx", "503", "other"};

static struct { /* the options */
    const char *host, *path, *body_file, *ctype, *arrival;
    int port, max_conns, preopen, lifo; double rate, duration, timeout; unsigned long long seed;
} o = {.host = "127.0.0.1", .path = "/", .ctype = "application/json", .arrival = "constant",
       .max_conns = 1024, .preopen = 64, .timeout = 5.0, .seed = 1};

static struct conn *conns;
static int *idle, nidle, nconns, ep, tfd;
static char *request; static size_t request_len;
static double *sched, t0; static long nreq;
static struct vec lat[CLASSES], lag;
static long status_count[600], sent, completed, timeouts, conn_errors, connect_errors, opened,
    waited, bad_responses;

static double now(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9 - t0;
}
static void die(const char *msg) { fprintf(stderr, "openloop: %s\n", msg); exit(2); }
static void push(struct vec *v, double x) {
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 1024;
        if (!(v->v = realloc(v->v, v->cap * sizeof *v->v))) die("out of memory");
    }
    v->v[v->n++] = x;
}
static uint64_t rng_state;
static double uniform(void) { /* splitmix64, in (0, 1] */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL; z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return ((z ^ (z >> 31)) >> 11) * 0x1.0p-53 + 0x1.0p-53;
}

static void watch(int i, uint32_t events, int op) { /* a syscall only when they change */
    if (op == EPOLL_CTL_MOD && conns[i].events == events) return;
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)i};
    if (epoll_ctl(ep, op, conns[i].fd, &ev) < 0) die("epoll_ctl failed");
    conns[i].events = events;
}
/* Idle connections, a ring: taken oldest first, or newest first with --reuse lifo. */
static int idle_head;
#define IDLE_AT(k) idle[(idle_head + (k)) % o.max_conns]
static void push_idle(int i) { conns[i].st = IDLE; IDLE_AT(nidle++) = i; }
static int take_idle(void) {
    if (!nidle) return -1;
    if (o.lifo) return IDLE_AT(--nidle);
    int i = IDLE_AT(0);
    idle_head = (idle_head + 1) % o.max_conns; nidle--;
    return i;
}
static void unidle(int i) { /* a closed idle connection (rare): the newest takes its place */
    for (int k = 0; k < nidle; k++)
        if (IDLE_AT(k) == i) { IDLE_AT(k) = IDLE_AT(nidle - 1); nidle--; return; }
}
static void close_conn(int i) {
    if (conns[i].st == IDLE) unidle(i);
    close(conns[i].fd); /* also removes it from the epoll set */
    conns[i].st = FREE; conns[i].req = -1; conns[i].len = 0; nconns--;
}
static void lose_request(int i) { /* the connection broke before the answer */
    if (conns[i].req >= 0) conn_errors++;
    close_conn(i);
}
static void write_request(int i) {
    struct conn *c = &conns[i];
    while (c->woff < request_len) {
        ssize_t n = send(c->fd, request + c->woff, request_len - c->woff, MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN) { watch(i, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD); return; }
        if (n < 0) { lose_request(i); return; }
        c->woff += (size_t)n;
    }
    watch(i, EPOLLIN, EPOLL_CTL_MOD);
}
static void start(int i) { /* an idle or just connected connection takes its request */
    conns[i].st = BUSY; conns[i].woff = 0; conns[i].len = 0; sent++;
    write_request(i);
}
static int open_conn(void) { /* a new connection, connecting; its slot, or -1 */
    int i = 0;
    while (conns[i].st != FREE) i++; /* nconns < max_conns, so a free slot exists */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0) { connect_errors++; return -1; }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
        close(fd); connect_errors++; return -1;
    }
    conns[i] = (struct conn){.fd = fd, .st = CONNECTING, .req = -1,
                             .buf = conns[i].buf, .cap = conns[i].cap};
    nconns++;
    watch(i, EPOLLOUT, EPOLL_CTL_ADD);
    return i;
}
static void connected(int i) {
    int err = 0; socklen_t len = sizeof err;
    getsockopt(conns[i].fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) { connect_errors++; lose_request(i); return; }
    opened++;
    if (conns[i].req >= 0) start(i);
    else { push_idle(i); watch(i, EPOLLIN, EPOLL_CTL_MOD); }
}

/* A response in c->buf: 1 complete (status, close set), 0 incomplete, -1 malformed. */
static int parse(struct conn *c, int eof, int *status, int *close_after) {
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return eof ? -1 : 0;
    *end = '\0'; /* the head as a string; restored below */
    long length = -1; *close_after = 0;
    if (strncmp(c->buf, "HTTP/1.", 7) != 0 || c->len < 12) { *end = '\r'; return -1; }
    *status = atoi(c->buf + 9);
    for (char *line = strstr(c->buf, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, "content-length:", 15) == 0) length = atol(line + 17);
        else if (strncasecmp(line + 2, "connection:", 11) == 0) {
            char *eol = strstr(line + 2, "\r\n"), *cl = strcasestr(line + 13, "close");
            if (cl && (!eol || cl < eol)) *close_after = 1;
        }
    }
    *end = '\r';
    size_t head = (size_t)(end - c->buf) + 4;
    if (*status < 100 || *status > 599) return -1;
    if (length < 0 && *close_after) { length = 0; if (!eof) return 0; } /* body until close */
    if (length < 0) length = 0;
    return c->len >= head + (size_t)length ? 1 : (eof ? -1 : 0);
}
static void readable(int i) {
    struct conn *c = &conns[i];
    int eof = 0;
    for (;;) {
        if (c->cap - c->len < 4096) {
            c->cap = c->cap ? c->cap * 2 : 16384;
            if (!(c->buf = realloc(c->buf, c->cap))) die("out of memory");
        }
        size_t room = c->cap - c->len;
        ssize_t n = recv(c->fd, c->buf + c->len, room, 0);
        if (n > 0) { c->len += (size_t)n; if ((size_t)n < room) break; continue; }
        if (n == 0 || errno != EAGAIN) eof = 1;
        break;
    }
    if (c->st != BUSY) { if (eof || c->len) lose_request(i); return; } /* idle: closed */
    int status = 0, close_after = 0, r = parse(c, eof, &status, &close_after);
    if (r == 0) return;
    if (r < 0) {
        if (c->len) bad_responses++;
        lose_request(i); return;
    }
    double ms = (now() - sched[c->req]) * 1e3;
    push(&lat[status / 100 == 2 ? C2XX : status == 503 ? C503 : COTHER], ms);
    status_count[status]++; completed++;
    c->req = -1; c->len = 0;
    if (close_after || eof || c->woff < request_len) close_conn(i); /* answered early */
    else push_idle(i);
}

/* Send every due request that can go; the others wait for a connection. */
static long lag_upto; /* requests before it have had their lag recorded */
static long next_req; /* the first request not yet given to a connection */
static void dispatch(double t) {
    long due_end = lag_upto;
    while (due_end < nreq && sched[due_end] <= t) due_end++;
    for (long k = lag_upto; k < due_end; k++) push(&lag, (t - sched[k]) * 1e3);
    long first_new = lag_upto; lag_upto = due_end;
    while (next_req < due_end && t - sched[next_req] > o.timeout) { timeouts++; next_req++; }
    while (next_req < due_end) {
        int i = take_idle();
        if (i < 0 && nconns >= o.max_conns) {
            waited += due_end - (next_req > first_new ? next_req : first_new);
            return;
        }
        if (i < 0 && (i = open_conn()) < 0) { conn_errors++; next_req++; continue; }
        conns[i].req = next_req++;
        if (conns[i].st == IDLE) start(i); /* else it is sent once connected */
    }
}
static void expire(double t) { /* time out requests still unanswered */
    for (int i = 0; i < o.max_conns; i++)
        if (conns[i].st != FREE && conns[i].req >= 0 && t - sched[conns[i].req] > o.timeout) {
            timeouts++; conns[i].req = -1; close_conn(i);
        }
}
static double armed = -1;
static void arm(double at) { /* wake at time ``at`` (< 0: never) */
    if (at == armed) return;
    armed = at;
    struct itimerspec it = {0};
    if (at >= 0) {
        double abs = at + t0;
        it.it_value.tv_sec = (time_t)abs; it.it_value.tv_nsec = (long)((abs - floor(abs)) * 1e9);
    }
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &it, NULL);
}
static void run(void) {
    struct epoll_event evs[256];
    double last_expire = 0;
    for (;;) {
        double t = now();
        dispatch(t);
        if (t - last_expire > 0.005) { expire(t); last_expire = t; }
        if (next_req >= nreq && nconns - nidle == 0) break; /* done: nothing due or in flight */
        if (next_req >= nreq) { /* no request left: close idle connections now */
            while (nidle) close_conn(IDLE_AT(0));
        }
        /* the next request to come due, even when requests wait (its lag and wait count) */
        arm(lag_upto < nreq ? sched[lag_upto] : -1);
        int n = epoll_wait(ep, evs, 256, 5);
        for (int k = 0; k < n; k++) {
            uint32_t i = evs[k].data.u32, e = evs[k].events;
            if (i == UINT32_MAX) { /* the timer: clear it, and re-arm it next time round */
                uint64_t x;
                if (read(tfd, &x, sizeof x) != sizeof x) { /* already cleared */ }
                armed = -2;
                continue;
            }
            if (conns[i].st == CONNECTING) connected((int)i);
            else if (conns[i].st == BUSY && conns[i].woff < request_len && (e & EPOLLOUT))
                write_request((int)i);
            else if (conns[i].st != FREE && (e & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                readable((int)i);
        }
    }
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static void percentiles(const char *name, struct vec *v, int with_p90) {
    printf("\"%s\": {\"count\": %zu", name, v->n);
    qsort(v->v, v->n, sizeof *v->v, cmp);
    const double ps[] = {50, 90, 99};
    const char *names[] = {"p50", "p90", "p99"};
    for (int k = 0; k < 3; k++) {
        if (k == 1 && !with_p90) continue;
        size_t rank = (size_t)ceil(ps[k] / 100.0 * (double)v->n);
        if (v->n) printf(", \"%s\": %.3f", names[k], v->v[rank ? rank - 1 : 0]);
        else printf(", \"%s\": null", names[k]);
    }
    if (v->n) printf(", \"max\": %.3f}", v->v[v->n - 1]);
    else printf(", \"max\": null}");
}
static void usage(int code) {
    printf(
        "usage: openloop --port PORT --rate R --duration S [options]\n"
        "Open-loop HTTP/1.1 load on 127.0.0.1; prints one JSON object (see the source's top).\n"
        "  --host H             target host, 127.0.0.1 only (default 127.0.0.1)\n"
        "  --port P             target port (required)\n"
        "  --path P             request path (default /)\n"
        "  --body FILE          POST this file's bytes (default: GET, no body)\n"
        "  --content-type T     the POST's Content-Type (default application/json)\n"
        "  --rate R             offered requests per second (required)\n"
        "  --duration S         seconds of scheduled arrivals (required)\n"
        "  --arrival A          constant or poisson (default constant)\n"
        "  --seed N             seed of the Poisson arrivals (default 1)\n"
        "  --max-connections N  at most N connections at once (default 1024)\n"
        "  --preopen N          connections opened before the clock starts (default 64)\n"
        "  --timeout S          seconds from its schedule before a request times out (default 5)\n"
        "  --reuse R            idle connection to reuse: fifo (least recently used, default) or\n"
        "                       lifo (most recently used)\n"
        "  --help               this text\n");
    exit(code);
}
static void options(int argc, char **argv) {
    static struct option opts[] = {
        {"host", 1, 0, 'h'}, {"port", 1, 0, 'p'}, {"path", 1, 0, 'u'}, {"body", 1, 0, 'b'},
        {"content-type", 1, 0, 'c'}, {"rate", 1, 0, 'r'}, {"duration", 1, 0, 'd'},
        {"arrival", 1, 0, 'a'}, {"seed", 1, 0, 's'}, {"max-connections", 1, 0, 'm'},
        {"preopen", 1, 0, 'o'}, {"timeout", 1, 0, 't'}, {"reuse", 1, 0, 'R'},
        {"help", 0, 0, 'H'}, {0, 0, 0, 0}};
    for (int ch; (ch = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (ch) {
        case 'h': o.host = optarg; break;
        case 'p': o.port = atoi(optarg); break;
        case 'u': o.path = optarg; break;
        case 'b': o.body_file = optarg; break;
        case 'c': o.ctype = optarg; break;
        case 'r': o.rate = atof(optarg); break;
        case 'd': o.duration = atof(optarg); break;
        case 'a': o.arrival = optarg; break;
        case 's': o.seed = strtoull(optarg, NULL, 10); break;
        case 'm': o.max_conns = atoi(optarg); break;
        case 'o': o.preopen = atoi(optarg); break;
        case 't': o.timeout = atof(optarg); break;
        case 'R': o.lifo = strcmp(optarg, "lifo") == 0;
            if (!o.lifo && strcmp(optarg, "fifo") != 0) die("--reuse must be fifo or lifo");
            break;
        case 'H': usage(0); break;
        default: usage(2);
        }
    }
    if (optind < argc) die("unexpected argument (see --help)");
    if (strcmp(o.host, "127.0.0.1") != 0)
        die("--host: only 127.0.0.1 is a target (this measures our own server)");
    if (o.port <= 0 || o.port > 65535) die("--port must be 1-65535");
    if (!(o.rate > 0) || !(o.duration > 0) || !(o.timeout > 0))
        die("--rate, --duration and --timeout must be > 0");
    if (strcmp(o.arrival, "constant") != 0 && strcmp(o.arrival, "poisson") != 0)
        die("--arrival must be constant or poisson");
    if (o.max_conns < 1) die("--max-connections must be >= 1");
    if (o.path[0] != '/') die("--path must start with /");
    if (o.preopen > o.max_conns) o.preopen = o.max_conns;
}
static void build_request(void) {
    char *body = NULL; long blen = 0;
    if (o.body_file) {
        FILE *f = fopen(o.body_file, "rb");
        if (!f || fseek(f, 0, SEEK_END) != 0 || (blen = ftell(f)) < 0) die("cannot read --body");
        rewind(f);
        if (!(body = malloc((size_t)blen + 1)) || fread(body, 1, (size_t)blen, f) != (size_t)blen)
            die("cannot read --body");
        fclose(f);
    }
    size_t cap = strlen(o.path) + strlen(o.ctype) + (size_t)blen + 256;
    if (!(request = malloc(cap))) die("out of memory");
    int n = body ? snprintf(request, cap,
                            "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: %s\r\n"
                            "Content-Length: %ld\r\n\r\n", o.path, o.port, o.ctype, blen)
                 : snprintf(request, cap, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n",
                            o.path, o.port);
    if (body) memcpy(request + n, body, (size_t)blen);
    request_len = (size_t)n + (size_t)blen;
    free(body);
}
static void schedule(void) { /* every scheduled time, seconds from the start */
    long cap = (long)(o.rate * o.duration * 1.5) + 64;
    if (!(sched = malloc((size_t)cap * sizeof *sched))) die("out of memory");
    if (o.arrival[0] == 'c') { /* by index, so float error never adds or drops a request */
        nreq = lround(o.rate * o.duration);
        for (long i = 0; i < nreq; i++) sched[i] = i / o.rate;
        return;
    }
    rng_state = o.seed;
    for (double t = -log(uniform()) / o.rate; t < o.duration; t += -log(uniform()) / o.rate) {
        if (nreq == cap && !(sched = realloc(sched, (size_t)(cap *= 2) * sizeof *sched)))
            die("out of memory");
        sched[nreq++] = t;
    }
}

static double cpu_seconds(void) { /* user + system CPU time of this process */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec
           + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}
static void report(double elapsed, double cpu) {
    printf("{\"offered_rate\": %.3f, \"duration_s\": %.3f, \"arrival\": \"%s\", "
           "\"scheduled\": %ld, \"sent\": %ld, \"completed\": %ld, \"status_counts\": {",
           o.rate, o.duration, o.arrival, nreq, sent, completed);
    for (int s = 100, first = 1; s < 600; s++)
        if (status_count[s]) {
            printf("%s\"%d\": %ld", first ? "" : ", ", s, status_count[s]);
            first = 0;
        }
    printf("}, \"latency_ms\": {");
    for (int k = 0; k < CLASSES; k++) {
        percentiles(class_name[k], &lat[k], 1);
        fputs(k < CLASSES - 1 ? ", " : "}, ", stdout);
    }
    printf("\"timeouts\": %ld, \"connection_errors\": %ld, \"bad_responses\": %ld, "
           "\"connect_errors\": %ld, \"connections_opened\": %ld, \"waited\": %ld, ",
           timeouts, conn_errors, bad_responses, connect_errors, opened, waited);
    percentiles("lag_ms", &lag, 0);
    printf(", \"elapsed_s\": %.3f, \"cpu_s\": %.3f}\n", elapsed, cpu);
}

int main(int argc, char **argv) {
    options(argc, argv);
    build_request();
    schedule();
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl; /* as many sockets as the system lets us */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    conns = calloc((size_t)o.max_conns, sizeof *conns);
    idle = calloc((size_t)o.max_conns, sizeof *idle);
    if (!conns || !idle) die("out of memory");
    for (int i = 0; i < o.max_conns; i++) conns[i].req = -1;
    if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0) die("epoll_create1 failed");
    if ((tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) < 0)
        die("timerfd_create failed");
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
    /* Pre-open in 64s, as a client's pool would be: hundreds at once overflow the accept queue. */
    struct epoll_event evs[64];
    while (opened < o.preopen && connect_errors == 0) {
        for (int k = 0; k < 64 && nconns < o.preopen; k++) open_conn();
        while (nconns - nidle > 0 && connect_errors == 0) {
            int n = epoll_wait(ep, evs, 64, (int)(o.timeout * 1000));
            if (n == 0) die("pre-opening connections timed out");
            for (int k = 0; k < n; k++) connected((int)evs[k].data.u32);
        }
    }
    t0 = 0; t0 = now() + 0.05; /* the clock starts 50 ms from here */
    double cpu = cpu_seconds();
    run();
    report(now(), cpu_seconds() - cpu);
    return 0;
}
