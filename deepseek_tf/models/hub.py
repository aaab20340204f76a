"""A TF Hub SavedModel as a Keras 3 backbone (`model.backbone: hub:/path` or a URL).

`hub.KerasLayer` is a tf_keras layer and does not work inside Keras 3 models, so the handle
is resolved and loaded with tensorflow_hub (`hub.resolve`, `hub.load`) and the SavedModel's
own tf.Variables are tracked by this layer (as `keras.layers.TFSMLayer` does): Keras sees
them, the optimizer updates them when the layer is trainable, and leaves them alone when not.

Accepted SavedModels follow TF Hub's reusable SavedModel API: a `__call__(inputs, training)`
(or a `serving_default` signature) taking a dict of token ids and returning either the
sequence output tensor (batch, seq, hidden) or a dict holding "sequence_output". The input
keys may be ours (token_ids / padding_mask / segment_ids) or TF Hub BERT's
(input_word_ids / input_mask / input_type_ids).
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from deepseek_tf.errors import UserError

HUB_KEYS = {"token_ids": "input_word_ids", "padding_mask": "input_mask", "segment_ids": "input_type_ids"}


def _hub():
    import warnings

    with warnings.catch_warnings():  # tensorflow_hub 0.16 imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        import tensorflow_hub
    import tensorflow_text  # noqa: F401  (TF Hub text models hold its ops; loading needs them registered)

    return tensorflow_hub


def resolve_handle(handle: str) -> str:
    """Local directory of a TF Hub handle (a URL is downloaded into TFHUB_CACHE_DIR once)."""
    hub = _hub()
    handle = handle.removeprefix("hub:")
    if not handle.startswith(("http://", "https://")) and not (Path(handle) / "saved_model.pb").is_file():
        raise UserError(f"TF Hub handle {handle!r}: no saved_model.pb in that directory")
    try:
        return hub.resolve(handle)
    except Exception as e:  # network errors, bad archives: one line for the user
        raise UserError(f"cannot resolve TF Hub handle {handle!r}: {str(e).splitlines()[0]}") from None


def _input_keys(fn) -> tuple[set[str], dict[str, tf.dtypes.DType]]:
    """Names and dtypes of the dict the SavedModel function expects (empty if unknown)."""
    concrete = getattr(fn, "concrete_functions", None) or [fn]
    for c in concrete:
        args, kwargs = c.structured_input_signature
        spec = args[0] if args else next(iter(kwargs.values()), None)
        if isinstance(spec, dict):
            return set(spec), {k: s.dtype for k, s in spec.items()}
        if kwargs and all(isinstance(s, tf.TensorSpec) for s in kwargs.values()):
            return set(kwargs), {k: s.dtype for k, s in kwargs.items()}
    return set(), {}


@keras.saving.register_keras_serializable(package="deepseek_tf")
class HubBackbone(keras.layers.Layer):
    """Token ids -> {"sequence_output": (batch, seq, hidden)} through a TF Hub SavedModel.

    Args:
      handle: local SavedModel directory (optionally prefixed "hub:") or a TF Hub URL.
      trainable: fine-tune the SavedModel's variables (False: frozen feature extractor).
    """

    def __init__(self, handle: str, trainable: bool = True, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        self.handle = handle
        self._loaded = _hub().load(resolve_handle(handle))
        if callable(self._loaded):
            self._fn, self._is_signature = self._loaded.__call__, False
        elif "serving_default" in getattr(self._loaded, "signatures", {}):
            self._fn, self._is_signature = self._loaded.signatures["serving_default"], True
        else:
            raise UserError(
                f"TF Hub handle {handle!r}: SavedModel has neither __call__ nor a serving_default signature"
            )
        self._keys, self._dtypes = _input_keys(self._fn)
        self._hub_names = "input_word_ids" in self._keys
        for v in self._saved_variables():
            # Wrapping (not copying) the SavedModel's tf.Variable: its functions read the same one.
            self._track_variable(
                keras.Variable(
                    v, trainable=v.trainable, dtype=v.dtype, shape=v.shape, name=v.name.split(":")[0].replace("/", "_")
                )
            )
        probe = {
            "token_ids": tf.zeros([1, 2], tf.int32),
            "padding_mask": tf.ones([1, 2], tf.bool),
            "segment_ids": tf.zeros([1, 2], tf.int32),
        }
        self.hidden_dim = int(self.call(probe)["sequence_output"].shape[-1])
        self.built = True

    def _saved_variables(self) -> list[tf.Variable]:
        obj = self._loaded
        if hasattr(obj, "variables") and not callable(obj.variables):
            return list(obj.variables)  # the reusable SavedModel API lists them
        # A bare restored function: the variables its concrete functions capture, trainable first
        # (what Keras's own ExportArchive collects; public Keras exposes no helper for it).
        fn = self._fn
        concrete = (
            fn.concrete_functions
            if hasattr(fn, "concrete_functions")
            else [fn.get_concrete_function()]
            if hasattr(fn, "get_concrete_function")
            else [fn]
        )
        seen, trainable, frozen = set(), [], []
        for cf in concrete:
            for v in cf.trainable_variables:
                if id(v) not in seen:
                    seen.add(id(v))
                    trainable.append(v)
        for cf in concrete:
            for v in cf.variables:
                if id(v) not in seen:
                    seen.add(id(v))
                    frozen.append(v)
        return trainable + frozen

    def call(self, inputs, training=None):
        feed = {}
        for ours, hubs in HUB_KEYS.items():
            key = hubs if self._hub_names else ours
            if self._keys and key not in self._keys:
                continue  # e.g. a model without segment ids
            value = inputs[ours]
            dtype = self._dtypes.get(key, tf.int32 if ours != "padding_mask" else value.dtype)
            feed[key] = tf.cast(value, dtype)
        if tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context():
            # Loaded under a strategy scope, the restored functions only run in a replica
            # context (e.g. building the model inside `strategy.scope()`): run there, keep one copy.
            strategy = tf.distribute.get_strategy()
            out = strategy.run(self._run, args=(feed, bool(training)))
            out = tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], out)
        else:
            out = self._run(feed, bool(training))
        sequence = out["sequence_output"] if isinstance(out, dict) else out  # (batch, seq, hidden)
        return {"sequence_output": sequence}

    def _run(self, feed: dict, training: bool):
        if self._is_signature:
            return self._fn(**feed)
        try:
            return self._fn(feed, training=training)
        except (TypeError, ValueError):  # saved without a `training` argument
            return self._fn(feed)

    def get_config(self):
        config = super().get_config()
        config.update(handle=self.handle)
        return config
