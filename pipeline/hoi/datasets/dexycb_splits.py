"""DexYCB's official splits, exactly as dex-ycb-toolkit defines them.

Source: NVlabs/dex-ycb-toolkit, ``dex_ycb_toolkit/dex_ycb.py`` (``_SUBJECTS``, ``_SERIALS``
and ``DexYCBDataset.__init__``). A split name is ``<setup>-<part>``: setup ``s0`` (seen
subjects, views and objects: every 5th sequence held out), ``s1`` (unseen subjects), ``s2``
(unseen camera views), ``s3`` (unseen grasped objects); part ``train``, ``val`` or ``test``.

A split picks subject indices (into ``SUBJECTS``), camera serial indices (into ``SERIALS``)
and sequence indices: the position of a sequence in the *sorted* list of its subject's 100
sequence folders (the toolkit asserts there are 100). Sequences are recorded 5 per grasped
object, so in s3 ``index // 5`` is the object group of a sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

SUBJECTS = (
    "20200709-subject-01", "20200813-subject-02", "20200820-subject-03", "20200903-subject-04",
    "20200908-subject-05", "20200918-subject-06", "20200928-subject-07", "20201002-subject-08",
    "20201015-subject-09", "20201022-subject-10",
)
SERIALS = (
    "836212060125", "839512060362", "840412060917", "841412060263",
    "932122060857", "932122060861", "932122061900", "932122062010",
)
SEQUENCES_PER_SUBJECT = 100
SETUPS, PARTS = ("s0", "s1", "s2", "s3"), ("train", "val", "test")
SPLIT_NAMES = tuple(f"{s}-{p}" for s in SETUPS for p in PARTS)

_ALL_SUBJECTS = tuple(range(10))
_ALL_SERIALS = tuple(range(8))
_ALL_SEQUENCES = tuple(range(SEQUENCES_PER_SUBJECT))


@dataclass(frozen=True)
class Split:
    """Indices a split keeps: into ``SUBJECTS``, ``SERIALS`` and each subject's sorted sequences."""

    name: str
    subjects: tuple[int, ...]
    serials: tuple[int, ...]
    sequences: tuple[int, ...]

    @property
    def subject_names(self) -> tuple[str, ...]:
        return tuple(SUBJECTS[i] for i in self.subjects)

    @property
    def serial_names(self) -> tuple[str, ...]:
        return tuple(SERIALS[i] for i in self.serials)

    @property
    def indexes_sequences(self) -> bool:
        """True when the split keeps only some sequence indices (s0, s3): then each subject
        folder must hold all 100 sequences for the indices to mean what the toolkit means."""
        return self.sequences != _ALL_SEQUENCES


def split(name: str) -> Split:
    """The ``Split`` called ``name`` (e.g. "s0-train"); ValueError naming the choices otherwise."""
    if name not in SPLIT_NAMES:
        raise ValueError(f"unknown DexYCB split {name!r}; choose one of {', '.join(SPLIT_NAMES)}")
    setup, part = name.split("-")
    seq = _ALL_SEQUENCES
    subjects, serials = _ALL_SUBJECTS, _ALL_SERIALS
    if setup == "s0":  # seen subjects, camera views, grasped objects
        seq = tuple(i for i in _ALL_SEQUENCES if (i % 5 != 4) == (part == "train"))
        subjects = {"train": _ALL_SUBJECTS, "val": (0, 1), "test": (2, 3, 4, 5, 6, 7, 8, 9)}[part]
    elif setup == "s1":  # unseen subjects
        subjects = {"train": (0, 1, 2, 3, 4, 5, 9), "val": (6,), "test": (7, 8)}[part]
    elif setup == "s2":  # unseen camera views
        serials = {"train": (0, 1, 2, 3, 4, 5), "val": (6,), "test": (7,)}[part]
    else:  # s3: unseen grasped objects (sequence index // 5 = object group)
        held = {"val": (3, 19), "test": (7, 11, 15)}
        if part == "train":
            seq = tuple(i for i in _ALL_SEQUENCES if i // 5 not in held["val"] + held["test"])
        else:
            seq = tuple(i for i in _ALL_SEQUENCES if i // 5 in held[part])
    return Split(name, tuple(subjects), tuple(serials), seq)
