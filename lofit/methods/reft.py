"""LoReFT (Wu, Arora et al. 2024, "ReFT: Representation finetuning for language models").

At chosen layers the residual stream (a decoder layer's output hidden state h) is edited at a
few prompt positions: Φ(h) = h + Rᵀ(W h + b − R h), with R ∈ ℝ^{r×d} of orthonormal rows, W ∈
ℝ^{r×d}, b ∈ ℝ^r. R stays orthonormal through training by torch's orthogonal parametrization
(Householder reflectors, no d×d buffer). All pretrained weights stay frozen.

Positions. The paper's "first p and last s prompt tokens" (`first`, `last`). Each layer holds two
parameter sets (one for the first-p positions, one for the last-s) unless `tied` (one for both);
a position in both sets (a prompt shorter than p + s) is edited once, by the last-s set. Trainable
parameters: layers × sets × (2·r·d + r).

Which tokens are the prompt. The edit reads each forward of the decoder stack (input ids,
attention mask, KV cache) in a pre-hook:
- a forward that continues a KV cache holds generated (or scored) tokens: nothing is edited,
  as in ReFT, whose interventions act on the prompt only;
- otherwise the prompt of a row is its unpadded tokens (left padding as in generation, right
  padding as in training batches: the first attention-mask position starts it), unless
- `prompts_of(input_ids, attention_mask, labels)` registered the row: a training sequence is
  prompt + answer, and its prompt is the tokens before the first supervised label. A row of a
  forward is recognised by the registered prompt it starts with, so a training loop may re-order,
  split, re-pad or shorten (after the prompt) a batch's rows before the model sees them, as the
  training module's length-grouped chunks do. `ReFTModule` registers every training and
  validation batch.
So a prompt that is trained on prompt + answer is edited at the same positions when generation
later sees it alone. (Multiple-choice scoring that runs a shared prefix first edits that prefix
as the prompt; the context after it continues the cache and is not edited.)

Initialisation (`init`): `random` (training's default, as the paper's reference implementation):
R with random orthonormal rows, W as an `nn.Linear(d, r)` weight (uniform ±1/√d), b = 0;
`identity`: W = R, b = 0, which makes Φ the identity exactly (Rᵀ(Rh − Rh) = 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils.parametrizations import orthogonal
from torch.utils.hooks import RemovableHandle

from lofit.backbone import Backbone
from lofit.data.examples import LossKind
from lofit.families import FamilySpec, decoder_layers, family_for, text_config
from lofit.hooks import HookedEdit
from lofit.io import atomic_path, read_json, write_json
from lofit.methods.configs import ReFTStepConfig
from lofit.methods.module import EditModule
from lofit.methods.registry import METHODS

REFT_DIR = METHODS["reft"].edit_dir
WEIGHTS_NAME = METHODS["reft"].edit.weights_file
CONFIG_NAME = METHODS["reft"].edit.config_file
REFT_FORMAT = "lofit-reft"
IGNORE_INDEX = -100
ORTHONORMAL_TOLERANCE = 1e-4
TENSORS = ("rotation", "weight", "bias")


@dataclass(frozen=True)
class ReFTShape:
    """What the edit is, apart from its values (also the checkpoint signature)."""

    num_layers: int  # decoder layers of the model
    layers: tuple[int, ...]  # the edited ones
    hidden_size: int
    rank: int
    first: int
    last: int
    tied: bool

    def __post_init__(self) -> None:
        if self.hidden_size <= 0 or not 0 < self.rank <= self.hidden_size:
            raise ValueError(f"ReFT needs 0 < rank <= hidden size, got rank {self.rank}, hidden size {self.hidden_size}")
        if self.first < 0 or self.last < 0 or self.first + self.last == 0:
            raise ValueError(f"ReFT edits the first and/or last prompt positions; got first={self.first}, last={self.last}")
        if not self.layers or len(set(self.layers)) != len(self.layers):
            raise ValueError(f"ReFT layers must be distinct and non-empty, got {list(self.layers)}")
        if any(not 0 <= layer < self.num_layers for layer in self.layers):
            raise ValueError(f"ReFT layers {list(self.layers)} are not all in 0..{self.num_layers - 1} (the model's layers)")

    @property
    def sets(self) -> int:
        """Parameter sets per layer: first-p and last-s apart, or one when tied or one side is 0."""
        return 1 if self.tied or self.first == 0 or self.last == 0 else 2

    @property
    def num_trainable(self) -> int:
        return len(self.layers) * self.sets * (2 * self.rank * self.hidden_size + self.rank)


def edited_positions(start: int, length: int, first: int, last: int, tied: bool) -> list[tuple[int, int]]:
    """(column, parameter set) of a prompt of `length` tokens beginning at column `start`.

    The last `last` positions use set 1 (set 0 when tied or when there is no first-p set); the
    first `first` positions not among them use set 0.
    """
    suffix_from = start + max(length - last, 0)
    suffix_set = 0 if tied or first == 0 else 1
    prefix = [(col, 0) for col in range(start, start + min(first, length)) if col < suffix_from]
    return prefix + [(col, suffix_set) for col in range(suffix_from, start + length)] if last else prefix


class _Rows(nn.Module):
    """Holds R (sets × rank × hidden); `orthogonal` keeps each r × d matrix's rows orthonormal."""

    def __init__(self, sets: int, rank: int, hidden_size: int, generator: torch.Generator | None) -> None:
        super().__init__()
        weight = torch.empty(sets, rank, hidden_size)
        for matrix in weight:
            nn.init.orthogonal_(matrix, generator=generator)
        self.weight = nn.Parameter(weight)


class LoReFTLayer(nn.Module):
    """One edited layer: R (`rows.weight`), W (`weight`) and b (`bias`) for each parameter set."""

    def __init__(self, sets: int, rank: int, hidden_size: int, init: str, generator: torch.Generator | None) -> None:
        super().__init__()
        self.rows = orthogonal(_Rows(sets, rank, hidden_size, generator), use_trivialization=False)
        if init == "identity":
            weight = self.rows.weight.detach().clone()
        elif init == "random":
            bound = 1 / math.sqrt(hidden_size)
            weight = torch.empty(sets, rank, hidden_size).uniform_(-bound, bound, generator=generator)
        else:
            raise ValueError(f"ReFT init must be 'random' or 'identity', got {init!r}")
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(sets, rank))

    def edit(self, hidden: torch.Tensor, sets: list[int]) -> torch.Tensor:
        """Φ of `hidden` (N × d), row i with parameter set `sets[i]`."""
        index = torch.tensor(sets, device=hidden.device)
        rows = self.rows.weight.to(hidden.dtype)[index]  # N × r × d
        weight = self.weight.to(hidden.dtype)[index]
        bias = self.bias.to(hidden.dtype)[index]
        low = torch.einsum("nrd,nd->nr", weight - rows, hidden) + bias  # W h + b − R h
        return hidden + torch.einsum("nrd,nr->nd", rows, low)


class ReFTIntervention(HookedEdit, nn.Module):
    """LoReFT at `shape.layers`: a pre-hook on the decoder stack finds the positions, a hook per layer edits them."""

    def __init__(self, shape: ReFTShape, init: str = "random", generator: torch.Generator | None = None) -> None:
        """`generator`: the random source of the initialisation (None: torch's global one, seeded by training)."""
        super().__init__()
        self.shape = shape
        self.layers = nn.ModuleList(
            LoReFTLayer(shape.sets, shape.rank, shape.hidden_size, init, generator) for _ in shape.layers
        )
        self._prompts: set[tuple[int, ...]] = set()  # registered training prompts (token ids)
        self._plan: tuple[torch.Tensor, torch.Tensor, list[int]] | None = None  # rows, columns, sets
        self._init_hooks()

    @classmethod
    def for_backbone(cls, backbone: Backbone, config: ReFTStepConfig | None = None) -> ReFTIntervention:
        config = config or ReFTStepConfig()
        num_layers = len(decoder_layers(backbone.model, backbone.family))
        layers = tuple(range(num_layers)) if config.layers is None else tuple(config.layers)
        hidden = text_config(backbone.model.config).hidden_size
        shape = ReFTShape(num_layers, layers, hidden, config.rank, config.first, config.last, config.tied)
        return cls(shape, config.init)

    @property
    def num_trainable(self) -> int:
        """layers × sets × (2·r·d + r)."""
        return self.shape.num_trainable

    def signature(self) -> dict[str, Any]:
        return {**asdict(self.shape), "layers": list(self.shape.layers)}

    # ------------------------------------------------------------------ prompts
    @staticmethod
    def _unpadded(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> list[tuple[int, list[int]]]:
        """(first real column, real token ids) of every row."""
        if attention_mask is None:
            return [(0, row) for row in input_ids.tolist()]
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            kept = [token for token, keep in zip(ids, mask) if keep]
            rows.append((mask.index(1) if kept else 0, kept))
        return rows

    @contextmanager
    def prompts_of(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor
    ) -> Iterator[None]:
        """While inside: these prompt + answer rows are edited at their prompts (tokens before the first label)."""
        mask = attention_mask.tolist() if attention_mask is not None else [[1] * input_ids.shape[1]] * len(input_ids)
        registered: set[tuple[int, ...]] = set()
        for (_start, ids), row_mask, row_labels in zip(self._unpadded(input_ids, attention_mask), mask, labels.tolist()):
            supervised = [label for label, keep in zip(row_labels, row_mask) if keep]
            length = next((i for i, label in enumerate(supervised) if label != IGNORE_INDEX), len(ids))
            registered.add(tuple(ids[:length]))
        previous, self._prompts = self._prompts, registered
        try:
            yield
        finally:
            self._prompts = previous

    def _find_positions(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Pre-hook of the decoder stack: which (row, column) of this forward are edited, with which set."""
        self._plan = None
        if not self.enabled:
            return
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        cache = kwargs.get("past_key_values")
        positions = kwargs.get("cache_position")
        continues = (cache is not None and cache.get_seq_length() > 0) or (
            positions is not None and positions.numel() > 0 and int(positions[0]) > 0
        )
        if continues:
            return
        attention_mask = kwargs.get("attention_mask")
        if input_ids is None:
            if self._prompts:
                raise RuntimeError("ReFT finds training prompts by their token ids; this forward passes inputs_embeds")
            embeds = kwargs["inputs_embeds"]
            input_ids = torch.zeros(embeds.shape[:2], dtype=torch.long)
        if attention_mask is not None and attention_mask.dim() != 2:
            raise RuntimeError("ReFT reads a 2-D attention mask (batch × tokens) to find each row's prompt")
        rows, cols, sets = [], [], []
        for row, (start, ids) in enumerate(self._unpadded(input_ids, attention_mask)):
            length = len(ids)
            if self._prompts:
                lengths = {len(prompt) for prompt in self._prompts if tuple(ids[: len(prompt)]) == prompt}
                if len(lengths) != 1:
                    problem = "starts with no registered training prompt" if not lengths else "starts with two registered prompts"
                    raise RuntimeError(f"ReFT: row {row} of this forward {problem}")
                length = lengths.pop()
            for col, which in edited_positions(start, length, self.shape.first, self.shape.last, self.shape.tied):
                rows.append(row)
                cols.append(col)
                sets.append(which)
        device = input_ids.device
        as_index = lambda values: torch.tensor(values, dtype=torch.long, device=device)  # noqa: E731
        self._plan = (as_index(rows), as_index(cols), sets)

    def _hook(self, index: int):
        def hook(_module: nn.Module, _args: tuple, output):
            if not self.enabled or self._plan is None or not self._plan[2]:
                return None
            rows, cols, sets = self._plan
            hidden = output[0] if isinstance(output, tuple) else output
            edited = self.layers[index].edit(hidden[rows, cols], sets)
            hidden = hidden.index_put((rows, cols), edited)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        return hook

    def _register(self, model: nn.Module, family: FamilySpec | None) -> list[RemovableHandle]:
        family = family or family_for(model.config.model_type)
        layers = decoder_layers(model, family)
        if len(layers) != self.shape.num_layers:
            raise ValueError(f"ReFT is for {self.shape.num_layers} layers, the model has {len(layers)}")
        stack = _decoder_stack(model, family)
        handles = [stack.register_forward_pre_hook(self._find_positions, with_kwargs=True)]
        handles += [layers[layer].register_forward_hook(self._hook(i)) for i, layer in enumerate(self.shape.layers)]
        return handles

    def rotations(self) -> torch.Tensor:
        """R of every edited layer and set: layers × sets × rank × hidden."""
        return torch.stack([layer.rows.weight for layer in self.layers])


def _decoder_stack(model: nn.Module, family: FamilySpec) -> nn.Module:
    """The module that holds the decoder layers (it receives the ids, the mask and the cache)."""
    for path in family.layers_paths:
        parent, _, _name = path.rpartition(".")
        try:
            model.get_submodule(path)
        except AttributeError:
            continue
        return model.get_submodule(parent)
    decoder_layers(model, family)  # raises the error that names the family entry to fix
    raise AssertionError("unreachable")


class ReFTModule(EditModule):
    """Trains LoReFT with LoFiT's losses and loop; exports `reft/`.

    Every training and validation batch is registered with the edit (`prompts_of`) before its
    step runs, so its prompts, not its answers, are edited however the loss runs the model.

    Args:
        backbone: the frozen model.
        loss: the task's loss kind (`sft` or `dpo`).
        config: rank, positions, layers, init, optimiser, DPO and checkpoint-choice settings.
        output_dir: where rank 0 writes `reft/` at the end of fit.
    """

    method = "reft"

    def __init__(
        self,
        backbone: Backbone,
        loss: LossKind,
        config: ReFTStepConfig | None = None,
        output_dir: str | Path | None = None,
    ) -> None:
        config = config or ReFTStepConfig()
        super().__init__(backbone, ReFTIntervention.for_backbone(backbone, config), loss, config, output_dir)
        self._registered: AbstractContextManager[None] | None = None

    def _register_batch(self, batch: dict[str, torch.Tensor]) -> None:
        self._registered = self.intervention.prompts_of(batch["input_ids"], batch.get("attention_mask"), batch["labels"])
        self._registered.__enter__()

    def _release_batch(self) -> None:
        if self._registered is not None:
            self._registered.__exit__(None, None, None)
            self._registered = None

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._register_batch(batch)

    def on_train_batch_end(self, outputs: Any, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._release_batch()

    def on_validation_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._register_batch(batch)

    def on_validation_batch_end(
        self, outputs: Any, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._release_batch()

    def export(self, out_dir: Path) -> None:
        save_reft(self.intervention, out_dir / REFT_DIR, self.backbone)


@dataclass
class ReFTConfig:
    """What a saved ReFT edit is and which model it belongs to."""

    base_model: str
    model_type: str
    num_layers: int
    layers: list[int]
    hidden_size: int
    rank: int
    first: int
    last: int
    tied: bool
    method: str = "reft"
    format: str = REFT_FORMAT


def save_reft(intervention: ReFTIntervention, path: str | Path, backbone: Backbone) -> Path:
    """Write `reft.safetensors` (rotation R, weight W, bias b; layers × sets first) and `reft_config.json`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    values = {
        "rotation": intervention.rotations(),
        "weight": torch.stack([layer.weight for layer in intervention.layers]),
        "bias": torch.stack([layer.bias for layer in intervention.layers]),
    }
    tensors = {name: value.detach().float().cpu().contiguous() for name, value in values.items()}
    with atomic_path(path / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": REFT_FORMAT})
    shape = intervention.shape
    config = ReFTConfig(
        backbone.name, backbone.model.config.model_type, shape.num_layers, list(shape.layers),
        shape.hidden_size, shape.rank, shape.first, shape.last, shape.tied,
    )
    write_json(path / CONFIG_NAME, asdict(config))
    return path


def load_reft(path: str | Path, backbone: Backbone) -> ReFTIntervention:
    """Rebuild a saved ReFT edit for `backbone` (not attached); a one-line error for a bad or foreign folder."""
    from lofit.adapter import read_weights

    path = Path(path)
    raw = read_json(path / CONFIG_NAME)
    if raw.get("format") != REFT_FORMAT:
        raise ValueError(f"{path / CONFIG_NAME}: not a {REFT_FORMAT} config")
    try:
        config = ReFTConfig(**raw)
        shape = ReFTShape(
            config.num_layers, tuple(config.layers), config.hidden_size, config.rank, config.first, config.last, config.tied
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path / CONFIG_NAME}: not a valid ReFT config ({err})") from None
    model_layers = len(decoder_layers(backbone.model, backbone.family))
    model_hidden = text_config(backbone.model.config).hidden_size
    if (config.num_layers, config.hidden_size) != (model_layers, model_hidden):
        raise ValueError(
            f"{path}: ReFT edit is for {config.num_layers} layers × {config.hidden_size} ({config.base_model}), "
            f"the model has {model_layers} × {model_hidden}"
        )
    tensors = read_weights(path / WEIGHTS_NAME)
    expected = {
        "rotation": (len(shape.layers), shape.sets, shape.rank, shape.hidden_size),
        "weight": (len(shape.layers), shape.sets, shape.rank, shape.hidden_size),
        "bias": (len(shape.layers), shape.sets, shape.rank),
    }
    found = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    if found != expected:
        raise ValueError(f"{path / WEIGHTS_NAME}: holds {found}, the config says {expected}")
    rotation = tensors["rotation"]
    gram = rotation @ rotation.transpose(-1, -2)
    if not torch.allclose(gram, torch.eye(shape.rank).expand_as(gram), atol=ORTHONORMAL_TOLERANCE):
        raise ValueError(f"{path / WEIGHTS_NAME}: the rows of 'rotation' are not orthonormal")
    # a private generator: the values are overwritten, and loading must not move torch's global RNG
    intervention = ReFTIntervention(shape, init="identity", generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for index, layer in enumerate(intervention.layers):
            layer.rows.weight = rotation[index]
            layer.weight.copy_(tensors["weight"][index])
            layer.bias.copy_(tensors["bias"][index])
    return intervention.to(next(backbone.model.parameters()).device)
