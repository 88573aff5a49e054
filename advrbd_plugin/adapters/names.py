"""One table: each toolbox's attack names and the registered attack of ours they map to.

``ours`` is None where we have no equivalent attack; such records still load (the
ground truth comes from the record) and keep the toolbox's name. README_interop.md
shows the same table (``markdown_table()`` renders it; a test keeps them in sync).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

__all__ = ["AttackName", "ATTACK_NAMES", "our_attack", "markdown_table"]


class AttackName(NamedTuple):
    toolbox: str         # our format name: backdoorbench | backdoor-toolbox | backdoorbox
    name: str            # as the toolbox spells it
    ours: Optional[str]  # our registered attack, or None
    note: str = ""


ATTACK_NAMES: tuple[AttackName, ...] = (
    # BackdoorBench: info.pickle["attack"] (attack/<name>.py)
    AttackName("backdoorbench", "badnet", "badnet", "poisons drawn from every class"),
    AttackName("backdoorbench", "blended", "blend"),
    AttackName("backdoorbench", "sig", "sig", "clean-label: poisons keep their label"),
    AttackName("backdoorbench", "lc", None, "clean-label: poisons keep their label"),
    AttackName("backdoorbench", "wanet", "wanet", "noise-mode samples (label kept) are covers"),
    AttackName("backdoorbench", "inputaware", None, "cross samples (label kept) are covers"),
    AttackName("backdoorbench", "blind", None),
    AttackName("backdoorbench", "bpp", None),
    AttackName("backdoorbench", "ctrl", None),
    AttackName("backdoorbench", "ftrojann", None),
    AttackName("backdoorbench", "lf", None),
    AttackName("backdoorbench", "lira", None),
    AttackName("backdoorbench", "poison_ink", None),
    AttackName("backdoorbench", "refool", None),
    AttackName("backdoorbench", "ssba", None),
    AttackName("backdoorbench", "trojannn", None),
    # backdoor-toolbox: -poison_type (the folder name starts with it)
    AttackName("backdoor-toolbox", "badnet", "badnet", "trigger: their triggers/ file"),
    AttackName("backdoor-toolbox", "blend", "blend", "trigger: their triggers/ file"),
    AttackName("backdoor-toolbox", "SIG", "sig", "delta 30/255, f 6, clean-label"),
    AttackName("backdoor-toolbox", "WaNet", "wanet", "warp grids read from the folder"),
    AttackName("backdoor-toolbox", "TaCT", "tact", "source class 1, covers from 5 and 7"),
    AttackName("backdoor-toolbox", "adaptive_blend", "adaptive_blend", "trigger: their file"),
    AttackName("backdoor-toolbox", "adaptive_patch", "adaptive_patch", "triggers: their files"),
    AttackName("backdoor-toolbox", "trojan", None, "patch trigger file, like badnet"),
    AttackName("backdoor-toolbox", "basic", None, "patch blended at alpha"),
    AttackName("backdoor-toolbox", "clean_label", None),
    AttackName("backdoor-toolbox", "adaptive_k_way", None),
    AttackName("backdoor-toolbox", "badnet_all_to_all", None),
    AttackName("backdoor-toolbox", "dynamic", None),
    AttackName("backdoor-toolbox", "ISSBA", None),
    AttackName("backdoor-toolbox", "refool", None),
    AttackName("backdoor-toolbox", "SleeperAgent", None),
    AttackName("backdoor-toolbox", "none", "none"),
    # BackdoorBox: the core.attacks class that made the datasets
    AttackName("backdoorbox", "BadNets", "badnet"),
    AttackName("backdoorbox", "Blended", "blend"),
    AttackName("backdoorbox", "WaNet", "wanet"),
    AttackName("backdoorbox", "PhysicalBA", "physicalba"),
    AttackName("backdoorbox", "AdaptivePatch", "adaptive_patch"),
    AttackName("backdoorbox", "LabelConsistent", None),
    AttackName("backdoorbox", "Refool", None),
    AttackName("backdoorbox", "Blind", None),
    AttackName("backdoorbox", "IAD", None),
    AttackName("backdoorbox", "LIRA", None),
    AttackName("backdoorbox", "ISSBA", None),
    AttackName("backdoorbox", "TUAP", None),
    AttackName("backdoorbox", "SleeperAgent", None),
    AttackName("backdoorbox", "BATT", None),
    AttackName("backdoorbox", "BAAT", None),
)

#: Spellings users type for our attacks (any toolbox).
_ALIASES = {
    "badnet": "badnet", "badnets": "badnet",
    "blend": "blend", "blended": "blend",
    "sig": "sig",
    "wanet": "wanet",
    "tact": "tact",
    "adaptive_blend": "adaptive_blend", "adaptiveblend": "adaptive_blend",
    "adaptive_patch": "adaptive_patch", "adaptivepatch": "adaptive_patch",
    "physicalba": "physicalba", "physical_ba": "physicalba",
    "none": "none",
}


def our_attack(name: Optional[str], toolbox: Optional[str] = None) -> Optional[str]:
    """Our registered attack for a toolbox's attack ``name`` (None: no equivalent).

    With ``toolbox`` the table is consulted (exact spelling first, then case-insensitive);
    without it, common spellings are accepted (badnets, blended, physical_ba, TaCT, ...).
    """
    if not name:
        return None
    if toolbox is not None:
        rows = [r for r in ATTACK_NAMES if r.toolbox == toolbox]
        for r in rows:
            if r.name == name:
                return r.ours
        for r in rows:
            if r.name.lower() == name.lower():
                return r.ours
    return _ALIASES.get(name.lower().replace("-", "_"))


def markdown_table() -> str:
    """The table as Markdown (toolbox | their name | ours | note)."""
    lines = ["| toolbox | their name | our attack | note |", "|---|---|---|---|"]
    for r in ATTACK_NAMES:
        lines.append(f"| {r.toolbox} | `{r.name}` | {f'`{r.ours}`' if r.ours else '-'} | {r.note} |")
    return "\n".join(lines)
