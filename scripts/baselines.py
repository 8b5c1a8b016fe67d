"""Baseline servers for the service benchmark: what our service is compared with.

* ``floor``: the same JSON parsed into the same array, no model; the cheapest possible answer.
* ``naive``: the tutorial server: Keras ``model.predict`` on every request.
* ``direct``: the SavedModel signature called directly per request, on the event loop, no
  batching (the simplest fast server).

Run: ``python scripts/baselines.py --kind floor --models models --variant depthwise --port 8001``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import orjson
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

import modelrepo  # noqa: F401  (quiet TensorFlow)
from modelrepo.contract import CLASSES, INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME, SIGNATURE
from modelrepo.layout import ModelRepository


def parse(body: bytes) -> np.ndarray:
    """The same parsing work as the service's JSON path."""
    return np.asarray([orjson.loads(body)[INPUT_NAME]], dtype=np.float32).reshape(-1, *INPUT_SHAPE)


def answer(probabilities: np.ndarray) -> Response:
    """A response of the same shape as the service's."""
    row = probabilities[0].astype(float)
    body = {"predictions": [{"digit": int(row.argmax()), "probabilities": row.tolist()}]}
    return Response(orjson.dumps(body), media_type="application/json")


def build(kind: str, models: Path, variant: str) -> FastAPI:
    """One baseline app."""
    app = FastAPI()
    if kind == "floor":
        fixed = np.full((1, CLASSES), 1 / CLASSES, dtype=np.float32)

        @app.post("/predict/{name}")
        async def floor(name: str, request: Request) -> Response:
            parse(await request.body())
            return answer(fixed)

        return app

    import keras
    import tensorflow as tf

    path = str(ModelRepository(models).get(variant).path)
    if kind == "naive":
        layer = keras.layers.TFSMLayer(path, call_endpoint=SIGNATURE)
        model = keras.Sequential([keras.Input(INPUT_SHAPE, name=INPUT_NAME), layer])

        @app.post("/predict/{name}")
        async def naive_predict(name: str, request: Request) -> Response:
            images = parse(await request.body())
            out = model.predict(images, verbose=0)
            return answer(np.asarray(out[OUTPUT_NAME] if isinstance(out, dict) else out))

        return app

    signature = tf.saved_model.load(path).signatures[SIGNATURE]

    @app.post("/predict/{name}")
    async def direct(name: str, request: Request) -> Response:
        images = parse(await request.body())
        out = signature(**{INPUT_NAME: tf.constant(images)})[OUTPUT_NAME].numpy()
        return answer(out)

    return app


def main() -> None:
    """Parse arguments and serve one baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["floor", "naive", "direct"], required=True)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--variant", default="depthwise")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    app = build(args.kind, args.models, args.variant)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
