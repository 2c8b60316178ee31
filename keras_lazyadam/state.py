"""The slots of one variable, as the rule sees them (issue 16).

`update_step` reads and writes a variable's slots through `FullSlots` or
`CompactSlots`; the maths stays in `rule.py`. `FullSlots` are today's slots
(no op added). `CompactSlots` keep `v` (and `vhat`) per row with
`second_moment="row"` and `m` in bfloat16 or in 8-bit codes with one
float32 scale per row; they decode on gather/read and encode on
scatter/write. ARCHITECTURE.md ("Compact optimizer state") has the design
and the measurements behind the codes.
"""

import re
from typing import NamedTuple

import keras
from keras import ops

from keras_lazyadam import backend
from keras_lazyadam.rule import State

SECOND_MOMENTS = ("element", "row")
FIRST_MOMENT_DTYPES = (None, "bfloat16", "int8")
LEVELS = 127.0  # int8 codes are in [-127, 127]
# The dtype of the `m` slot. bfloat16 values are kept as their bits in an
# int16 slot: XLA on the CPU scatters rows into a bfloat16 array by
# converting the whole array to float32 and back (600 ms a step for a
# 1M x 64 table, measured with JAX 0.10), and into an int16 one in place.
STORAGE_DTYPES = {"bfloat16": "int16", "int8": "int8"}


class Codec(NamedTuple):
    """How one variable's compact slots are stored."""

    rank: int
    second_moment: str  # "element" or "row"
    first_moment_dtype: str | None  # None (the variable's), "bfloat16" or "int8"

    @property
    def row_v(self):
        return self.second_moment == "row"


def is_compact_config(second_moment, first_moment_dtype):
    return second_moment != "element" or first_moment_dtype is not None


def is_embedding_table(variable):
    """A `keras.layers.Embedding` (or `LazyEmbedding`) table."""
    return variable.name == "embeddings" and len(variable.shape) == 2


def wants_compact(variable, include, exclude):
    """Whether `variable` gets compact slots: rank >= 2, and excluded by no
    pattern of `exclude`, and an embedding table or matched by `include`.
    Patterns are regular expressions searched in `variable.path`."""
    if len(variable.shape) < 2:
        return False
    path = getattr(variable, "path", variable.name)
    if any(re.search(p, path) for p in exclude):
        return False
    return is_embedding_table(variable) or any(re.search(p, path) for p in include)


def patterns(var_list, var_names):
    """Patterns of `use_compact_state` / `exclude_from_compact_state`:
    `var_names` as given, each variable of `var_list` by its exact path."""
    out = [str(n) for n in var_names or ()]
    out += [f"^{re.escape(v.path)}$" for v in var_list or ()]
    return out


def add_slots(optimizer, var_list, names, codecs):
    """The slot lists (dict name -> list per variable) of `build`, created
    in Keras' order (per variable, name by name); `m_scale` for int8."""
    slots = {name: [] for name in names}
    if any(c is not None and c.first_moment_dtype == "int8" for c in codecs):
        slots["m_scale"] = []
    for variable, codec in zip(var_list, codecs):
        skip = getattr(variable, "overwrite_with_gradient", False)
        for name in names:
            if skip:
                slots[name].append(None)
            elif codec is None:
                slots[name].append(optimizer.add_variable_from_reference(variable, name))
            else:
                slots[name].append(_compact_slot(optimizer, variable, codec, name))
        if "m_scale" in slots:
            int8 = not skip and codec is not None and codec.first_moment_dtype == "int8"
            scale = _compact_slot(optimizer, variable, codec, "m_scale") if int8 else None
            slots["m_scale"].append(scale)
    return slots


def _compact_slot(optimizer, variable, codec, name):
    prefix = variable.path.replace("/", "_")
    per_row = name == "m_scale" or (name in ("v", "vhat") and codec.row_v)
    if per_row:
        dtype = "float32" if name == "m_scale" else variable.dtype
        return optimizer.add_variable(
            shape=tuple(variable.shape[:1]),
            initializer="zeros",
            dtype=dtype,
            name=f"{prefix}_{name}",
            layout=backend.row_layout(variable),
        )
    dtype = variable.dtype
    if name == "m" and codec.first_moment_dtype is not None:
        dtype = STORAGE_DTYPES[codec.first_moment_dtype]
    return optimizer.add_variable(
        shape=tuple(variable.shape),
        initializer="zeros",
        dtype=dtype,
        name=f"{prefix}_{name}",
        layout=_layout(variable),
    )


def _layout(variable):
    """The variable's layout under the current `keras.distribution` (what
    Keras' own slots take from the variable, by the public route)."""
    distribution = keras.distribution.distribution()
    return None if distribution is None else distribution.get_variable_layout(variable)


class CompactStateAPI:
    """LazyAdam's methods of the compact state: which variables get it
    (chosen before `build`, as Keras' `exclude_from_weight_decay`), and the
    decoded first moment. Expects `second_moment`, `first_moment_dtype`,
    `_compact_include`, `_compact_exclude` on the host, and `_codecs` once
    built."""

    def _codec(self, variable):
        """How `variable`'s slots are stored: a `state.Codec`, or None for
        the full state."""
        if not is_compact_config(self.second_moment, self.first_moment_dtype):
            return None
        if not wants_compact(variable, self._compact_include, self._compact_exclude):
            return None
        return Codec(len(variable.shape), self.second_moment, self.first_moment_dtype)

    def use_compact_state(self, var_list=None, var_names=None):
        """Gives these variables (rank >= 2) the compact state too (besides
        the embedding tables). `var_names`: regular expressions searched in
        each variable's path. Call before the optimizer is built."""
        self._choose_compact("use_compact_state", var_list, var_names, self._compact_include)

    def exclude_from_compact_state(self, var_list=None, var_names=None):
        """Keeps the full state for these variables (wins over
        `use_compact_state`). Call before the optimizer is built."""
        self._choose_compact(
            "exclude_from_compact_state", var_list, var_names, self._compact_exclude
        )

    def _choose_compact(self, method, var_list, var_names, into):
        if self.built:
            raise ValueError(
                f"`{method}()` can only be called before the optimizer is built "
                "(its slots are created then)."
            )
        if isinstance(var_names, str):
            var_names = [var_names]
        into.extend(patterns(var_list, var_names))

    def decoded_slot(self, var, slot_name):
        """The float value of slot `slot_name` of `var`: `m` decoded (the
        variable's shape), `v`/`vhat` as kept (one per row with
        `second_moment="row"`), others as `get_slot` returns them."""
        slot = self.get_slot(var, slot_name)
        codec = self._codecs[self._get_variable_index(var)]
        if slot_name != "m" or codec is None:
            return slot
        scale = None
        if codec.first_moment_dtype == "int8":
            scale = ops.convert_to_tensor(self.get_slot(var, "m_scale"))
        return decode_m(ops.convert_to_tensor(slot), scale, codec)


class FullSlots:
    """A variable and its full slots: the rule's tensors as they are."""

    fused = True  # a backend's fused dense kernel may serve
    second_moment = "element"
    selects_m = False  # `write` takes m's masked rows selected by the rule

    def __init__(self, state):
        self.state = state

    def gather(self, index):
        return State(*(x if x is None else backend.gather_rows(x, index) for x in self.state))

    def scatter(self, optimizer, index, new, gradient, beta_1):
        # (gradient, beta_1: what compact slots bound int8's scales with)
        for target, value in zip(self.state, new):
            if target is not None:
                backend.scatter_rows(optimizer, target, index, value)

    def read(self):
        return self.state

    def write(self, optimizer, new, touched, gradient, beta_1):
        for target, value in zip(self.state, new):
            if target is not None:
                optimizer.assign(target, value)


class CompactSlots:
    """A variable and its compact slots; the rule sees them decoded: `m` in
    float32 shaped like the rows, `v` and `vhat` shaped `(n, 1, ...)` when
    kept per row."""

    fused = False

    def __init__(self, codec, state, m_scale=None):
        self.codec = codec
        self.state = state  # State of the variable and its stored slots
        self.m_scale = m_scale
        self.second_moment = codec.second_moment
        # `write` selects the codes of masked rows itself: the rule leaves m unselected
        self.selects_m = codec.first_moment_dtype is not None

    def _decode(self, stored, scale):
        m = decode_m(stored.m, scale, self.codec)
        if self.m_scale is not None:  # int8: the rows' max |m| bounds their new scales
            self._old_max = old_row_max(stored.m, scale, m, self.codec)
        v, vhat = (self._from_rows(x) for x in (stored.v, stored.vhat))
        return State(stored.var, m, v, vhat, stored.row_step)

    def _from_rows(self, x):
        if x is None or not self.codec.row_v:
            return x
        return x[(slice(None),) + (None,) * (self.codec.rank - 1)]

    def _to_rows(self, x):
        if x is None or not self.codec.row_v:
            return x
        return ops.reshape(x, (-1,))

    def _encoded(self, new, gradient, beta_1):
        """`(slot variable, value)` pairs of the new state, encoded; int8's
        scales are `scale_bound` of the rows read and their `gradient`."""
        bound = None
        if self.m_scale is not None:
            bound = scale_bound(self._old_max, gradient, beta_1, self.codec)
        m, scale = encode_m(new.m, self.codec, bound)
        values = State(new.var, m, self._to_rows(new.v), self._to_rows(new.vhat), new.row_step)
        pairs = list(zip(self.state, values))
        if self.m_scale is not None:
            pairs.append((self.m_scale, scale))
        return [(t, x) for t, x in pairs if t is not None]

    def gather(self, index):
        stored = State(*(x if x is None else backend.gather_rows(x, index) for x in self.state))
        scale = None if self.m_scale is None else backend.gather_rows(self.m_scale, index)
        return self._decode(stored, scale)

    def scatter(self, optimizer, index, new, gradient, beta_1):
        for target, value in self._encoded(new, gradient, beta_1):
            backend.scatter_rows(optimizer, target, index, value)

    def read(self):
        stored = State(*(x if x is None else ops.convert_to_tensor(x) for x in self.state))
        scale = None if self.m_scale is None else ops.convert_to_tensor(self.m_scale)
        return self._decode(stored, scale)

    def write(self, optimizer, new, touched, gradient, beta_1):
        masked = touched is not None and touched is not True
        previous = new.var
        for target, value in self._encoded(new, gradient, beta_1):
            # Rows masked out keep their codes and scales bit for bit (a
            # re-encode of their decoded values might round apart); var, v,
            # vhat and row_step come out of the rule selected already.
            selects = target is self.m_scale or (
                # Only codes: an unencoded m comes out of the rule selected
                # (a second select of it made XLA copy the whole m).
                target is self.state.m and self.selects_m
            )
            if masked and selects:
                # Codes after the variable, scales after the codes: each is
                # written in place once every read of the old one is done
                # (see `backend.sequence`).
                mask = backend.sequence(previous, touched)
                if target is self.m_scale:
                    mask = ops.reshape(mask, (-1,))
                value = ops.where(mask, value, ops.convert_to_tensor(target))
                previous = value
            optimizer.assign(target, value)


def decode_m(stored, scale, codec):
    """The float32 first moment from its stored form (rows or whole)."""
    if codec.first_moment_dtype is None:
        return stored
    if codec.first_moment_dtype == "bfloat16":
        return ops.cast(backend.bitcast(stored, "bfloat16"), "float32")
    codes = ops.cast(stored, "float32")
    row_scale = scale[(slice(None),) + (None,) * (codec.rank - 1)]
    return _from_squares(row_scale, codes * ops.abs(codes))


def _from_squares(scale, squares):
    """`scale (c |c|) / 127^2`, the decoding of codes `c`: one order of
    operations for `decode_m` and `old_row_max`, which must agree bit for
    bit."""
    return scale * squares * (1.0 / (LEVELS * LEVELS))


def old_row_max(codes, scale, decoded, codec, from_codes=None):
    """Per row, the largest `|m|` of int8 rows: their `codes` and `scale`,
    and `decoded`, the float rows `decode_m` made of them. The same value
    from either, bit for bit (the decoding is monotonic in `|code|`); which
    one is `backend.reduces_codes()`'s choice (or `from_codes`)."""
    axes = tuple(range(1, codec.rank))
    if from_codes is None:
        from_codes = backend.reduces_codes()
    if not from_codes:
        return ops.max(ops.abs(decoded), axis=axes)
    # The largest |code|, as max and -min, each reducing the int8 slot
    # itself: an abs or a cast in front of the reduction was materialised
    # by XLA:CPU (a table-sized float array).
    top = ops.maximum(ops.max(codes, axis=axes), -ops.min(codes, axis=axes))
    top = ops.cast(top, "float32")
    return _from_squares(scale, top * top)


def scale_bound(old_max, gradient, beta_1, codec):
    """int8's new per-row scales: `beta_1 max|m_old| + (1 - beta_1) max|g|`
    (`old_max`: `old_row_max`), a bound of the new `max|m|`, since
    `|m| <= beta_1 |m_old| + (1 - beta_1) |g|` element by element (a
    catch-up decay only shrinks `m_old`). Known before the new `m` is: a
    maximum over the new `m` made XLA compute it once for the maximum and
    once more for the codes, and keep it (a fresh table-sized array every
    step, 2.3x float32's dense step on JAX). `max|m_old|` is exact, so the
    bound does not drift; it costs 1.2x the relative error of the exact
    maximum on simulated rows (`benchmarks/compact_state_rounding.py`)."""
    axes = tuple(range(1, codec.rank))
    beta_1 = ops.cast(beta_1, "float32")
    new_g = ops.max(ops.abs(ops.cast(gradient, "float32")), axis=axes)
    return beta_1 * old_max + (1 - beta_1) * new_g


def encode_m(m, codec, scale=None):
    """`(stored m, per-row scale or None)` of a float first moment.

    bfloat16: round to nearest even (stored as its bits, int16). int8: per
    row a scale `s` (`scale` where given, a bound of `max |m|`: see
    `scale_bound`; else `max |m|`) and codes
    `round(127 sqrt(min(|m| / s, 1))) sign(m)`, so that
    `m = s sign(c) (c / 127)^2` (finer near 0 than a linear map; see
    ARCHITECTURE.md)."""
    if codec.first_moment_dtype is None:
        return m, None
    if codec.first_moment_dtype == "bfloat16":
        return backend.bitcast(ops.cast(m, "bfloat16"), "int16"), None
    m = ops.cast(m, "float32")
    if scale is None:
        scale = ops.max(ops.abs(m), axis=tuple(range(1, codec.rank)))
    row_scale = scale[(slice(None),) + (None,) * (codec.rank - 1)]
    safe = ops.where(ops.greater(row_scale, 0), row_scale, ops.ones_like(row_scale))
    codes = ops.round(LEVELS * ops.sqrt(ops.minimum(ops.abs(m) / safe, 1.0))) * ops.sign(m)
    return ops.cast(codes, "int8"), scale


def slots_for(variable, stored, codec):
    """`FullSlots` or `CompactSlots` of `variable` from its slot dict."""
    state = State(
        variable,
        stored["m"],
        stored["v"],
        stored.get("vhat"),
        stored.get("row_step"),
    )
    if codec is None:
        return FullSlots(state)
    return CompactSlots(codec, state, stored.get("m_scale"))


def from_full(codec, name, value):
    """`{slot name: array}` of a full slot's numpy array (`load_tfa_weights`):
    `m` encoded (codes, and `m_scale` for int8), `v`/`vhat` averaged over
    each row with "row"."""
    if name in ("v", "vhat"):
        if codec.row_v:
            value = value.reshape(value.shape[:1] + (-1,)).mean(axis=1, dtype="float64")
        return {name: value}
    if codec.first_moment_dtype is None:
        return {"m": value}
    stored, scale = encode_m(ops.convert_to_tensor(value, "float32"), codec)
    out = {"m": stored}
    if scale is not None:
        out["m_scale"] = scale
    return out
