"""The knobs every method shares. A method with more knobs subclasses `PruneConfig`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

SCOPES = ("llm", "before_llm")
CACHE_POLICIES = ("all", "after")
POSITIONS = ("original", "compact")


def check_choice(name: str, value: object, allowed: tuple) -> None:
    """Refuse a setting that is not one of `allowed`, naming it."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


@dataclass(frozen=True)
class Cut:
    """One stage of pruning: from `layer` on, keep `ratio` of the visual tokens that reached it."""

    layer: int
    ratio: float


@dataclass
class PruneConfig:
    """Settings shared by every pruning method.

    `layer` is K, the index of the first decoder layer that runs on the pruned sequence: the selection is made
    from what layer K-1 computed. A before-LLM selection (`scope="before_llm"`) has K = 0: the LLM never sees the
    dropped tokens.
    """

    ratio: float = field(default=0.5, metadata={"help": "fraction of the visual tokens kept, in (0, 1]"})
    layer: int = field(default=2, metadata={"help": "K: first decoder layer that runs pruned (0 for before_llm)"})
    scope: str = field(default="llm", metadata={"help": "'llm' (select at layer K) or 'before_llm'"})
    cache_policy: str = field(
        default="all",
        metadata={
            "help": "'all': after prefill every layer's KV cache holds only the kept tokens; "
            "'after': only layers K.. do (FastV-style)"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of methods that draw at random"})
    positions: str = field(
        default="original",
        metadata={
            "help": "'original': kept tokens keep their position ids; 'compact' (before-LLM cuts, 1D RoPE): the "
            "kept tokens are renumbered 0..n-1, as the LLaVA releases that concatenate the kept embeddings"
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)):
            raise TypeError(f"ratio must be a number in (0, 1], got {self.ratio!r}")
        if not 0.0 < float(self.ratio) <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio!r}")
        self.ratio = float(self.ratio)
        if isinstance(self.layer, bool) or not isinstance(self.layer, int):
            raise TypeError(f"layer must be an int, got {self.layer!r}")
        check_choice("scope", self.scope, SCOPES)
        if self.scope == "before_llm" and self.layer != 0:
            raise ValueError(f"a before_llm selection runs before layer 0: layer must be 0, got {self.layer}")
        if self.scope == "llm" and self.layer < 1:
            raise ValueError(f"an in-LLM selection needs layer >= 1 (layer K-1 is read), got layer={self.layer}")
        check_choice("cache_policy", self.cache_policy, CACHE_POLICIES)
        check_choice("positions", self.positions, POSITIONS)
        if self.positions == "compact" and self.scope != "before_llm":
            raise ValueError(
                "positions='compact' renumbers the tokens a before-LLM cut keeps (scope='before_llm'); an in-LLM cut "
                f"keeps original positions (layers before K cached every token at them), got scope={self.scope!r}"
            )

    def cuts(self) -> list[Cut]:
        """The stages of this method, in layer order. Multi-stage methods override this."""
        return [Cut(self.layer, self.ratio)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
