"""Type stubs of expanse (the docstrings are the module's own: see help(expanse.Model))."""

from os import PathLike
from typing import Any, Callable, Optional, Protocol, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

Path = Union[str, PathLike]
Float32 = npt.NDArray[np.float32]

class _Bar(Protocol):
    def update(self, n: int) -> Any: ...

Progress = Union[_Bar, Callable[[int, int], Any], None]

class Model:
    """A frozen diffusion model (diffusers, guided-diffusion ADM or original DDPM folder)."""

    def __init__(
        self, path: Path, device: str = "cpu", dtype: str = "f32", batch: int = 8, threads: Optional[int] = None
    ) -> None: ...
    @property
    def in_channels(self) -> int: ...
    @property
    def path(self) -> "PathLike[str]": ...
    def invert(
        self,
        maps: Float32,
        steps: int = 5,
        t0: int = 50,
        fixed_point: int = 0,
        clip: Optional[float] = None,
        progress: Progress = None,
    ) -> Float32:
        """Model-space maps (N, C, H, W) or (N, H, W) → latents (N, C, H, W) at level t0."""
    def generate(
        self,
        latents: Float32,
        steps: int = 5,
        t0: int = 50,
        clip: Optional[float] = None,
        progress: Progress = None,
        guide: Optional[Callable[[int, Float32], Optional[Float32]]] = None,
    ) -> Float32:
        """Latents at level t0 → model-space maps (N, C, H, W), deterministic DDIM; guide(t, x0)
        may replace each step's predicted clean image."""
    def reconstruct(
        self,
        maps: Float32,
        steps: int = 5,
        t0: int = 50,
        fixed_point: int = 0,
        clip: Optional[float] = None,
        progress: Progress = None,
    ) -> Tuple[Float32, list[float]]:
        """Inversion then generation: the maps back and each map's PSNR in dB (data range 2)."""

class Normalizer:
    """A fitted normalization: physical units ↔ model space [-1, 1]."""

    @staticmethod
    def fit(
        maps: Float32,
        transform: str = "linear",
        range: str = "minmax",
        offset: Optional[float] = None,
        softening: Optional[float] = None,
        units: Optional[str] = None,
    ) -> "Normalizer": ...
    def forward(self, maps: Float32) -> Float32:
        """Physical (N, H, W) → model space (N, H, W)."""
    def inverse(self, images: Float32) -> Float32:
        """Model space (N, C, H, W) or (N, H, W) → physical (N, H, W)."""
    @property
    def transform(self) -> str: ...
    @property
    def units(self) -> Optional[str]: ...
    def to_json(self) -> str: ...

class Prior:
    """A Gaussian prior fitted to one domain's latents, with those latents."""

    @property
    def kind(self) -> str: ...
    @property
    def shape(self) -> Tuple[int, int, int]: ...
    def sample(
        self,
        count: int = 16,
        seed: int = 0,
        k: int = 10,
        band: Sequence[float] = (5.0, 95.0),
        tests: Optional[Sequence[str]] = None,
        candidates: str = "draw",
        budget: int = 10000,
        debias: str = "rings",
        norm: str = "match",
    ) -> Tuple[Float32, dict[str, Any]]:
        """Accepted latents (count, C, H, W) and the sampling record."""

def read_maps(
    path: Path, hdu: Union[int, str, None] = None, dataset: Optional[str] = None
) -> Tuple[Float32, dict[str, Any]]:
    """Maps (N, H, W) float32 in physical units, NaN where blank, and their units and sources."""

def prepare(
    inputs: Union[Path, Sequence[Path]],
    hdu: Union[int, str, None] = None,
    dataset: Optional[str] = None,
    max_maps: Optional[int] = None,
    transform: str = "linear",
    range: str = "minmax",
    offset: Optional[float] = None,
    softening: Optional[float] = None,
    crop: Optional[str] = None,
    tile: Optional[str] = None,
    size: Optional[int] = None,
    channels: int = 1,
    band_map: Optional[Sequence[int]] = None,
    max_blank: Optional[float] = None,
) -> Tuple[Float32, npt.NDArray[np.uint8], Normalizer]:
    """`expanse ingest` in memory: (stack (N, C, H, W), blank mask (N, H, W), normalizer)."""

def fit_prior(latents: Float32, kind: str = "empirical", name: str = "domain") -> Prior:
    """A Gaussian prior (scalar, diagonal, lowrank:K, stationary or empirical) fitted to latents."""

def refine(
    images: Float32,
    real: Float32,
    iterations: int = 25,
    scales: Optional[int] = None,
    angles: int = 8,
    increments: bool = False,
) -> Tuple[Float32, dict[str, Any]]:
    """The run's refinement toward the real images' wavelet moments: (images, record)."""

def run(
    config: Path, out: Optional[Path] = None, resume: bool = False, latent_cache: Optional[Path] = None
) -> dict[str, Any]:
    """`expanse run CONFIG --out OUT`: the run's summary."""

def validate(
    real: Union[Path, Float32],
    synthetic: Union[Path, Float32],
    out: Path,
    statistics: Optional[Sequence[str]] = None,
) -> dict[str, Any]:
    """`expanse validate`: report.json's record; the report and figures go to `out`."""

def statistic_curves(
    maps: Float32,
    statistic: str,
    thresholds: Optional[str] = None,
    peak_edges: Optional[str] = None,
    scattering_j: Optional[int] = None,
    scattering_l: Optional[int] = None,
    bispectrum_samples: Optional[int] = None,
) -> Tuple[npt.NDArray[np.float64], list[dict[str, Any]]]:
    """One battery statistic per map: values (N, K) and the curves they are made of."""

def derive_seed(seed: int, name: str) -> int:
    """The seed `expanse run` gives stage `name` (e.g. "sample/clouds") of a run seeded `seed`."""

def set_threads(n: int) -> None:
    """Worker threads of this process, once, before any computation."""
