"""Dual encoder (two-tower retriever): query and document towers, shared or separate."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf

from deepseek_tf.models import losses
from deepseek_tf.models.fusion import IMAGE_KEYS

# Constructor options of removed experiments (train.symmetric, train.learn_temperature,
# train.label_smoothing), stored at their off values in older saved models.
_RETIRED_OPTIONS = ("symmetric", "learn_temperature", "label_smoothing")

_KEY_LENGTH = 8192  # longest token sequence `text_keys` can identify (BERT stops at 512)


@dataclass(frozen=True)
class DualLoss:
    """One row of the dual encoder's loss table: the method computing it and the batch fields it
    reads besides the two towers' embeddings (the trainer's data pipeline supplies them)."""

    method: str  # DualEncoder method (x, q, d, neg) -> scalar loss
    reads_labels: bool = False  # x["label"]: graded labels of the pairs, when the data has them


# `train.loss` -> how a dual encoder computes it (`losses` holds the formulas).
LOSSES = {
    "infonce": DualLoss("_infonce"),
    "contrastive": DualLoss("_contrastive", reads_labels=True),
    "triplet": DualLoss("_triplet"),
    "margin_mse": DualLoss("_margin_mse"),
}


def reads_labels(loss: str, label_weighting: bool = False) -> bool:
    """Whether training batches must carry the pairs' graded labels for this loss."""
    return LOSSES[loss].reads_labels or (loss == "infonce" and label_weighting)


def unscale_loss_for_distribution(loss: tf.Tensor) -> tf.Tensor:
    """The loss times the replica count: Keras divides each replica's loss by it (so summed
    gradients average), and the loss tracker must see the undivided value. Public Keras has no
    name for this step (it lives in keras.src.losses.loss), so it is written out here."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss * tf.cast(replicas, loss.dtype) if replicas > 1 else loss


def text_keys(ids: dict) -> tf.Tensor:
    """One int64 identity per tokenized text: Σ_t id_t·c_t (mod 2⁶⁴) with fixed random c_t.

    Equal keys mean the model sees the same input, whatever the batch padding (pad id 0
    adds nothing). Used to mask duplicate positives; a collision has odds ~2⁻⁶⁴. Documents that
    carry an image vector add Σ_j bits(i_j)·c'_j: the same title with another image is another
    product, a negative and not a duplicate.
    """
    token_ids = tf.where(tf.cast(ids["padding_mask"], tf.bool), ids["token_ids"], 0)  # (B, T)
    coefs = tf.random.stateless_uniform([_KEY_LENGTH], seed=[20, 26], minval=None, maxval=None, dtype=tf.int64)[
        : tf.shape(token_ids)[1]
    ]  # (T,)
    keys = tf.reduce_sum(tf.cast(token_ids, tf.int64) * coefs[None, :], axis=1)  # (B,)
    if "image" not in ids:
        return keys
    bits = tf.cast(tf.bitcast(tf.cast(ids["image"], tf.float32), tf.int32), tf.int64)  # (B, image_dim)
    image_coefs = tf.random.stateless_uniform(
        tf.shape(bits)[1:], seed=[20, 27], minval=None, maxval=None, dtype=tf.int64
    )  # (image_dim,)
    return keys + tf.reduce_sum(bits * image_coefs[None, :], axis=1)  # (B,)


@keras.saving.register_keras_serializable(package="deepseek_tf")
class DualEncoder(keras.Model):
    """Embeds queries and documents; trained with an in-batch ranking loss.

    Inputs to `call` are {"query": ids, "doc": ids[, "neg": ids]}, each ids a dict of
    token_ids / padding_mask / segment_ids. With `doc_encoder=None` the towers share
    weights (the usual choice when queries and documents are the same language).

    InfoNCE options: `mask_duplicates` keeps pairs sharing a query or document text out of each
    other's negatives; `gather_across_replicas` scores each replica's queries against the
    documents (and hard negatives) of every replica, so N devices train exactly like one
    device on the global batch. `accumulation_steps` > 1 (set by the trainer, not saved)
    splits each batch into micro-batches GradCache-style (Gao et al. 2021): the loss is
    the loss of the whole batch, so gradients equal the big-batch gradients.

    Distillation: loss "margin_mse" trains on a teacher's score margins alone (inputs carry
    "teacher": (batch, k), one margin per hard negative; see `losses.margin_mse`);
    `distill_weight` w > 0 adds w · margin_mse to the loss named.

    Images: with `doc_fusion` (a `fusion.ImageFusion`) the document tower's text embedding is
    fused with "image" (batch, image_dim) and "image_mask" (batch,) carried in the doc inputs (and
    hard negatives with theirs, (batch, k, image_dim) and (batch, k), in the neg inputs);
    with `image_encoder` (`images.build_image_encoder`) those vectors come from image files.
    """

    def __init__(
        self,
        query_encoder,
        doc_encoder=None,
        loss: str = "infonce",
        temperature: float = 0.05,
        margin: float = 0.5,
        mask_duplicates: bool = True,
        gather_across_replicas: bool = True,
        distill_weight: float = 0.0,
        doc_fusion=None,
        image_encoder=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.query_encoder = query_encoder
        self.doc_encoder = doc_encoder
        self.loss_name = loss
        self.temperature = temperature
        self.margin = margin
        self.mask_duplicates = mask_duplicates
        self.gather_across_replicas = gather_across_replicas
        self.distill_weight = distill_weight
        self.doc_fusion = doc_fusion
        # frozen, and not called in training: image vectors are computed from files before batching
        # (`data.image_files`); the model keeps it so that what it reads travels with its weights
        self.image_encoder = image_encoder
        self.accumulation_steps = 1

    @property
    def doc_tower(self):
        return self.doc_encoder if self.doc_encoder is not None else self.query_encoder

    def call(self, inputs, training=None):
        out = {"query": self.query_encoder(inputs["query"], training=training)}
        if "doc" in inputs:
            out["doc"] = self.encode_doc(inputs["doc"], training=training)
        if "neg" in inputs:  # hard negatives are documents: fused with their own images like "doc"
            out["neg"] = self.encode_doc(flat_negatives(inputs["neg"]), training=training)  # (B·k, dim)
        return out

    def encode_doc(self, ids: dict, training=None):
        """The document tower: text embedding (batch, dim), fused with ids["image"] under `doc_fusion`."""
        if self.doc_fusion is None:
            return self.doc_tower(ids, training=training)
        text = self.doc_tower({k: v for k, v in ids.items() if k not in IMAGE_KEYS}, training=training)
        return self.doc_fusion(text, ids["image"], ids["image_mask"], training=training)

    # ------------------------------------------------------------------ loss
    def _infonce(self, x, q, d, neg) -> tf.Tensor:
        keys = None
        if self.mask_duplicates and x is not None:
            keys = {k: text_keys(flat_negatives(x[k])) for k in ("query", "doc", "neg") if k in x}  # (B,) / (B·k,)
        local = {"d": d} if neg is None else {"d": d, "neg": neg}
        gathered, gathered_keys, offset = local, keys, 0
        ctx = tf.distribute.get_replica_context()
        if self.gather_across_replicas and ctx is not None and ctx.num_replicas_in_sync > 1:
            # all_gather's gradient sums the upstream gradients of every replica and hands each
            # replica the slice of its own rows, so d(Σ_r loss_r)/d(local docs) is exact.
            # (Nested values are packed into one tensor: one call per dtype.)
            gathered = ctx.all_gather(local, axis=0)
            if keys is not None:
                gathered_keys = ctx.all_gather(keys, axis=0)
            sizes = ctx.all_gather(tf.shape(q)[:1], axis=0)  # (replicas,)
            offset = tf.reduce_sum(sizes[: ctx.replica_id_in_sync_group])
        mask = None
        if keys is not None:
            g = gathered_keys
            mask = losses.positive_mask(keys["query"], keys["doc"], g["query"], g["doc"], g.get("neg"))
        # graded labels, when the data carries them (train.label_weighting)
        weights = x.get("label") if isinstance(x, dict) else None
        return losses.infonce(
            q,
            gathered["d"],
            gathered.get("neg"),
            temperature=self.temperature,
            offset=offset,
            mask=mask,
            weights=weights,
        )

    def _margin_mse(self, x, q, d, neg) -> tf.Tensor:
        if x is None or "teacher" not in x or neg is None:
            raise ValueError(
                "margin_mse needs hard negatives and the teacher's margins "
                "(inputs 'neg' and 'teacher'; set data.teacher)"
            )
        return losses.margin_mse(q, d, neg, x["teacher"], self.temperature)

    def _contrastive(self, x, q, d, neg) -> tf.Tensor:
        # Each pair is relevant when its graded label is >= 1 (all are, without labels); its hard
        # negatives, or else the next pair's document, are irrelevant pairs of the same query.
        labels = x.get("label") if isinstance(x, dict) else None
        y = tf.ones(tf.shape(q)[:1]) if labels is None else tf.cast(tf.reshape(labels, [-1]) >= 1, tf.float32)
        if neg is None:
            neg_q, neg_d = q, tf.roll(d, shift=1, axis=0)  # (B, dim)
        else:
            per_pair = tf.shape(neg)[0] // tf.shape(q)[0]
            neg_q, neg_d = tf.repeat(q, per_pair, axis=0), neg  # (B·k, dim), pair-major like neg
        pairs_q, pairs_d = tf.concat([q, neg_q], axis=0), tf.concat([d, neg_d], axis=0)
        y = tf.concat([y, tf.zeros(tf.shape(neg_q)[:1])], axis=0)  # (B + B·k,)
        return losses.contrastive(pairs_q, pairs_d, y, margin=self.margin)

    def _triplet(self, x, q, d, neg) -> tf.Tensor:
        if neg is None:
            return losses.triplet(q, d, tf.roll(d, shift=1, axis=0), margin=self.margin)  # next pair's doc
        per_pair = tf.shape(neg)[0] // tf.shape(q)[0]  # one triplet per hard negative, pair-major
        return losses.triplet(tf.repeat(q, per_pair, 0), tf.repeat(d, per_pair, 0), neg, margin=self.margin)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        q, d, neg = y_pred["query"], y_pred["doc"], y_pred.get("neg")  # (batch, dim) each
        if self.loss_name not in LOSSES:
            raise ValueError(f"unknown dual-encoder loss {self.loss_name!r} (one of {', '.join(LOSSES)})")
        loss = getattr(self, LOSSES[self.loss_name].method)(x, q, d, neg)
        if self.distill_weight and self.loss_name != "margin_mse":
            loss = loss + self.distill_weight * self._margin_mse(x, q, d, neg)
        # Keras sums gradients over replicas; each replica contributes loss / n_replicas.
        return loss / tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, loss.dtype)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras takes one batch from the stream and `strategy.reduce`s it to build state;
        # MultiWorkerMirroredStrategy cannot reduce a nested batch, and the taken batch would
        # shift the data stream. The trainer builds model and optimizer up front, so when
        # nothing is left to build, skip it. Private Keras names: Keras offers no public hook for
        # this step (Model.fit calls _maybe_symbolic_build itself), nor a public recursive layer
        # list (Model.layers holds direct children only) or view of what compile() was given.
        nothing_to_build = (
            all(layer.built for layer in self._flatten_layers())
            and self.optimizer is not None
            and self.optimizer.built
            and self._compile_metrics is None
            and self._compile_loss is None
        )
        if not nothing_to_build:
            super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    # ------------------------------------------------------------------ GradCache
    def seed_states(self) -> list:
        """The state variables of every dropout seed generator in the towers (Keras tracks each
        keras.random.SeedGenerator's state among the non-trainable variables)."""
        return [v for v in self.non_trainable_variables if v.path.endswith("seed_generator_state")]

    def train_step(self, data):
        logs = self._train_step(data)
        strategy = tf.distribute.get_strategy()
        if (
            isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode()
        ):
            # Keras reduces logs across workers with reduce(MEAN, axis=0), which needs a batch axis.
            # (_in_multi_worker_mode: the strategy's own test for a cluster of several workers;
            # tf.distribute has no public one, and Keras uses the same call for the same purpose.)
            logs = {key: tf.reshape(value, [1]) for key, value in logs.items()}
        return logs

    def _train_step(self, data):
        k = self.accumulation_steps
        if k <= 1:
            return super().train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        chunks = [tf.nest.map_structure(lambda t, i=i: tf.split(t, k, axis=0)[i], x) for i in range(k)]
        seeds = self.seed_states()
        # Pass 1: embeddings of every micro-batch, no graph kept. Dropout seeds are recorded
        # so pass 2 draws the same masks and the two passes compute the same function.
        states, outs = [], []
        for chunk in chunks:
            states.append([tf.identity(s) for s in seeds])
            outs.append(tf.nest.map_structure(tf.stop_gradient, self(chunk, training=True)))
        y_pred = {key: tf.concat([o[key] for o in outs], axis=0) for key in outs[0]}  # (B, dim)
        weights = self.trainable_weights
        with tf.GradientTape() as tape:
            tape.watch(y_pred)
            # As Keras's own train_step does: _compute_loss wraps compute_loss with the training
            # flag, and _loss_tracker is the metric behind the "loss" log; Keras exposes neither
            # publicly, and a second tracker would log a second "loss".
            loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            self._loss_tracker.update_state(
                unscale_loss_for_distribution(loss), sample_weight=tf.shape(tf.nest.flatten(x)[0])[0]
            )
            scaled = self.optimizer.scale_loss(loss)
        emb_grads, direct = tape.gradient(scaled, (y_pred, weights))  # direct: e.g. logit_scale
        grads = list(direct)
        # Pass 2: per micro-batch, backpropagate d loss / d embedding through the towers.
        for i, chunk in enumerate(chunks):
            for var, value in zip(seeds, states[i]):
                var.assign(value)
            with tf.GradientTape() as tape:
                out = self(chunk, training=True)
                surrogate = tf.add_n([tf.reduce_sum(out[key] * tf.split(emb_grads[key], k, axis=0)[i]) for key in out])
            grads = [_add_grads(a, b) for a, b in zip(grads, tape.gradient(surrogate, weights))]
        self.optimizer.apply_gradients(zip(grads, weights))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def get_config(self):
        return (
            {
                "name": self.name,
                "query_encoder": keras.saving.serialize_keras_object(self.query_encoder),
                "doc_encoder": (
                    keras.saving.serialize_keras_object(self.doc_encoder) if self.doc_encoder is not None else None
                ),
                "loss": self.loss_name,
                "temperature": self.temperature,
                "margin": self.margin,
                "mask_duplicates": self.mask_duplicates,
                "gather_across_replicas": self.gather_across_replicas,
                "distill_weight": self.distill_weight,
            }
            | (  # text-only models keep the config they always had
                {} if self.doc_fusion is None else {"doc_fusion": keras.saving.serialize_keras_object(self.doc_fusion)}
            )
            | (
                {}
                if self.image_encoder is None
                else {"image_encoder": keras.saving.serialize_keras_object(self.image_encoder)}
            )
        )

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in _RETIRED_OPTIONS:  # models saved while these options existed still load
            config.pop(key, None)
        config["query_encoder"] = keras.saving.deserialize_keras_object(config["query_encoder"])
        if config.get("doc_encoder") is not None:
            config["doc_encoder"] = keras.saving.deserialize_keras_object(config["doc_encoder"])
        for key in ("doc_fusion", "image_encoder"):
            if config.get(key) is not None:
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


def flat_negatives(ids: dict) -> dict:
    """k hard negatives per pair come as (batch, k, length) ids: -> (batch·k, length), pair-major;
    their "image" (batch, k, image_dim) -> (batch·k, image_dim), "image_mask" (batch, k) -> (batch·k,)."""
    if ids["token_ids"].shape.rank != 3:
        return ids
    return {name: tf.reshape(t, [-1, tf.shape(t)[-1]] if t.shape.rank == 3 else [-1]) for name, t in ids.items()}


def _add_grads(a, b):
    """Sums two gradients, keeping sparse (embedding) gradients sparse."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, tf.IndexedSlices) and isinstance(b, tf.IndexedSlices):
        return tf.IndexedSlices(tf.concat([a.values, b.values], 0), tf.concat([a.indices, b.indices], 0), a.dense_shape)
    return tf.convert_to_tensor(a) + tf.convert_to_tensor(b)
