"""Distance of an image to the training images in latent space: Mahalanobis on the image's latent
vector, or nearest neighbours per location (patches)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.covariance import LedoitWolf
from torch import nn

from anomaly.config import PatchDistance, ScoringConfig
from anomaly.progress import progress
from anomaly.scoring.line_runs import LineRunMaximum


def _seeded_indices(total: int, count: int, seed: int) -> np.ndarray:
    """A seeded sorted sample of min(count, total) indices out of range(total), without repeats."""
    return np.sort(np.random.default_rng(seed).choice(total, size=min(total, count), replace=False))


def _mean_and_floored_spread(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation over images (dim 0) per position, the deviation floored at a tenth of its
    average, so a position where normal images never vary cannot blow up what is divided by it."""
    spread = maps.std(dim=0, keepdim=True)
    return maps.mean(dim=0, keepdim=True), spread.clamp_min(0.1 * float(spread.mean()))


def _smallest(values: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """The k smallest values along `dim` (kept, size k): a plain minimum for k = 1, much cheaper than top-k."""
    return values.amin(dim=dim, keepdim=True) if k == 1 else values.topk(k, dim=dim, largest=False).values


class MahalanobisDistance(nn.Module):
    """sqrt((z - mean)^T P (z - mean)) with P the inverse of a Ledoit-Wolf shrunk covariance.

    With `blocks` > 1 the vector is that many equal parts, each with its own shrunk covariance
    (P block-diagonal): the code and its round-trip shift each get a covariance the training images
    pin down, without the cross terms between them, which they do not.
    """

    def __init__(self, dim: int, blocks: int = 1) -> None:
        super().__init__()
        if dim % blocks:
            raise ValueError(f"a {dim}-d vector does not split into {blocks} equal blocks")
        self.blocks = blocks
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("precision", torch.eye(dim))

    def fit(self, codes: np.ndarray) -> MahalanobisDistance:
        size = codes.shape[1] // self.blocks
        for start in range(0, codes.shape[1], size):
            part = slice(start, start + size)
            estimator = LedoitWolf().fit(codes[:, part].astype(np.float64))
            self.mean[part] = torch.from_numpy(estimator.location_).float()
            self.precision[part, :] = 0
            self.precision[part, part] = torch.from_numpy(estimator.precision_).float()
        return self

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        centred = codes - self.mean
        return ((centred @ self.precision) * centred).sum(dim=1).clamp_min(0).sqrt()


class PatchNearestNeighbourDistance(nn.Module):
    """Per-location distance: each position of an encoder feature map (B, C, h, w) against a bank
    of training positions; mean distance to the k nearest, averaged over 3x3 neighbouring
    positions; the image's distance is the largest mean along a straight run of `line_length`
    positions (LineRunMaximum, optionally capping each position first), which for a run of 1 is the
    largest position.

    With `grid` (the feature map's (h, w)), each position's distance is also standardised by the
    mean and spread that training images get there when their own patches are left out of the
    bank, so places where normal images vary (glare at an edge) stop dominating the maximum.

    The bank is compared in chunks, so a batch never holds its full distance matrix (10240
    positions x 30k bank vectors is 1.2 GB per image). A chunk holds at most CHUNK_ELEMENTS
    distances per image, so large inputs get smaller chunks. The chunks depend only on the bank and the
    grid, not on the batch, so the loop unrolls into the exported graph.
    """

    CHUNK = 4096  # at most this many bank vectors per chunk
    CHUNK_ELEMENTS = 2**26  # at most this many distances per image per chunk: 256 MB of float32
    POSITION_IMAGES = 64  # training images whose leave-own-image-out maps give the position statistics
    POSITION_BATCH = 8  # of them searched at once

    def __init__(
        self,
        channels: int,
        k: int,
        bank_size: int,
        grid: tuple[int, int] | None = None,
        line_length: int = 1,
        line_cap: float | None = None,
    ) -> None:
        super().__init__()
        self.k = k
        self.image_distance = LineRunMaximum(line_length, line_cap)
        self.normalise_positions = grid is not None
        self.register_buffer("bank", torch.zeros(bank_size, channels))
        self.register_buffer("bank_centre", torch.zeros(channels))
        statistics_shape = (1, 1, *grid) if grid is not None else (1, 1, 1, 1)
        self.register_buffer("position_mean", torch.zeros(statistics_shape))
        self.register_buffer("position_scale", torch.ones(statistics_shape))

    def fit(self, features: np.ndarray, seed: int = 0) -> PatchNearestNeighbourDistance:
        """Fit on the training images' feature maps (N, C, h, w), which may be a memory map: `fit_chunks` of one."""
        return self.fit_chunks([features], seed)

    def fit_chunks(self, chunks: list[np.ndarray], seed: int = 0) -> PatchNearestNeighbourDistance:
        """Fit on training feature maps held as consecutive chunks of images, each (N_i, C, h, w), with the same
        result as `fit` on their concatenation, so a large normal set can be split across workers: the bank's rows
        are drawn over all images and each is read from the chunk that holds it, so only the sampled rows and
        POSITION_IMAGES images are read into memory."""
        sizes = [len(chunk) for chunk in chunks]
        channels, height, width = chunks[0].shape[1:]
        positions, offsets = height * width, np.cumsum([0, *sizes[:-1]])
        rows = _seeded_indices(
            sum(sizes) * positions, self.bank.shape[0], seed
        )  # row r: image r // positions, place r % positions
        owners, places = rows // positions, rows % positions
        holder = np.searchsorted(offsets, owners, side="right") - 1
        sampled = np.empty((len(rows), channels), dtype=np.float32)
        for index, chunk in enumerate(chunks):
            mine = holder == index
            sampled[mine] = chunk.reshape(len(chunk), channels, positions)[
                owners[mine] - offsets[index], :, places[mine]
            ]
        bank = torch.from_numpy(sampled).double()
        self.bank_centre = bank.mean(dim=0).float()
        self.bank = (bank - self.bank_centre.double()).float()
        if self.normalise_positions:
            self._fit_positions(chunks, offsets, owners, seed)
        return self

    @torch.no_grad()
    def _fit_positions(self, chunks: list[np.ndarray], offsets: np.ndarray, bank_owners: np.ndarray, seed: int) -> None:
        """Mean and spread per position of training images' maps, each image's own bank vectors (those whose
        `bank_owners` entry, shaped as the position bank's `excluded` for one image, is the image's index) left out
        (otherwise every training patch finds itself at distance 0). The spread is floored at a tenth
        of its average, so a position where normal images never vary cannot blow up. Each sampled image is read
        from the chunk of training images (starting at `offsets`) that holds it."""
        images = _seeded_indices(int(offsets[-1]) + len(chunks[-1]), self.POSITION_IMAGES, seed)
        located = [(int(np.searchsorted(offsets, i, side="right")) - 1, int(i)) for i in images]
        groups = [located[start : start + self.POSITION_BATCH] for start in range(0, len(located), self.POSITION_BATCH)]
        maps = torch.cat(
            [
                self.smoothed_map(
                    torch.from_numpy(
                        np.concatenate(
                            [
                                np.asarray(chunks[k][i - offsets[k] : i - offsets[k] + 1], dtype=np.float32)
                                for k, i in group
                            ]
                        )
                    ),
                    torch.from_numpy(self.stacked_exclusions([bank_owners == i for _, i in group])),
                )
                for group in progress(groups, "training images' own distances per place")
            ]
        )
        self.position_mean, self.position_scale = _mean_and_floored_spread(maps)

    @staticmethod
    def stacked_exclusions(per_image: list[np.ndarray]) -> np.ndarray:
        """Each image's excluded bank vectors (bool, one per bank vector) as distance_map's `excluded` for the batch."""
        return np.stack(per_image)[:, None, :]

    def distance_map(self, features: torch.Tensor, excluded: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, h, w) -> (B, 1, h, w): mean distance of each position to its k nearest bank vectors,
        ignoring the bank vectors that `excluded` marks (bool: one per bank vector, or (B, 1, bank) per image). As in
        the position bank's
        search, a query's own squared norm is the same for all its candidates and is added after the search."""
        batch, channels, height, width = features.shape
        queries = features.permute(0, 2, 3, 1).reshape(batch, height * width, channels) - self.bank_centre
        query_norms = (queries * queries).sum(dim=2, keepdim=True)
        k = min(self.k, self.bank.shape[0])
        nearest = []
        size = self.chunk_size(height * width)
        for start, chunk in zip(range(0, self.bank.shape[0], size), self.bank.split(size)):
            partial = (chunk * chunk).sum(dim=1) - 2 * queries @ chunk.T  # |c|^2 - 2 q.c
            if excluded is not None:
                partial = partial.masked_fill(excluded[..., start : start + chunk.shape[0]], float("inf"))
            nearest.append(_smallest(partial, min(k, chunk.shape[0]), dim=2))
        squared = _smallest(torch.cat(nearest, dim=2), k, dim=2) + query_norms
        distances = squared.clamp_min(0).sqrt().mean(dim=2)
        return distances.reshape(batch, 1, height, width)

    def chunk_size(self, positions: int) -> int:
        """Bank vectors compared at once for a grid of `positions`: CHUNK, or fewer on a large grid."""
        return max(1, min(self.CHUNK, self.CHUNK_ELEMENTS // positions))

    def smoothed_map(self, features: torch.Tensor, excluded: torch.Tensor | None = None) -> torch.Tensor:
        return F.avg_pool2d(self.distance_map(features, excluded), 3, stride=1, padding=1, count_include_pad=False)

    def score_map(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, 1, h, w): the smoothed distances, position-normalised when fitted so."""
        smoothed = self.smoothed_map(features)
        if self.normalise_positions:
            smoothed = (smoothed - self.position_mean) / self.position_scale
        return smoothed

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.image_distance(self.score_map(features))


def greedy_k_centres(vectors: torch.Tensor, count: int, first: int) -> torch.Tensor:
    """Per group, greedy k-centre selection: vectors (G, n, C) -> (G, count) indices into n, starting at `first`
    and then always taking the vector farthest from those already taken, so the chosen ones cover the
    group's whole spread, rare normal variants included, rather than its densest part."""
    groups = torch.arange(len(vectors))
    norms = (vectors * vectors).sum(dim=2)

    def squared_gaps(centres: torch.Tensor) -> torch.Tensor:  # (G, C) -> (G, n)
        return (
            norms
            - 2 * torch.bmm(vectors, centres.unsqueeze(2)).squeeze(2)
            + (centres * centres).sum(dim=1, keepdim=True)
        )

    chosen = torch.full((len(vectors), count), first, dtype=torch.long)
    nearest = squared_gaps(vectors[:, first])
    for slot in range(1, count):
        chosen[:, slot] = nearest.argmax(dim=1)
        nearest = torch.minimum(nearest, squared_gaps(vectors[groups, chosen[:, slot]]))
    return chosen


class PositionBankDistance(PatchNearestNeighbourDistance):
    """Patch kNN against a bank kept per position (scoring.latent.aligned): each position of a query is
    compared only with training features within `radius` positions of the same place. Each place keeps
    `per_position` of the training images' features there, a greedy k-centre coreset of all of them, so the
    bank covers the rarer normal looks of each place, not only its densest part.

    The bank is stored as (h * w, C, per_position), each place's vectors centred on that place's training mean
    (`bank_centre`, (h * w, C)), so each position's candidates are one batched matrix product; the queries are
    shifted over the (2 * radius + 1)^2 offsets, not the much larger bank. The search expands
    |q - b|^2 = |q|^2 - 2 q.b + |b|^2, which in float32 loses the distance when it is small next to the norms:
    centring per place keeps the norms at the size of the place's own spread, not the spread between places,
    so distances between near-duplicate images survive (and ONNX Runtime and PyTorch agree on them). The bank is
    stored in float16 and searched in float32: it is most of the exported model. Position statistics, smoothing and the
    image's distance are the parent's.
    """

    FAR = 1e30  # squared distance given to candidates outside the grid or left out: never among the nearest
    FIT_POSITIONS = 1024  # at most this many positions' coresets are chosen at once
    FIT_VALUES = 2**26  # and at most this many training feature values read at once (256 MB of float32)

    def __init__(
        self,
        channels: int,
        k: int,
        per_position: int,
        grid: tuple[int, int],
        radius: int,
        line_length: int = 1,
        line_cap: float | None = None,
    ) -> None:
        super().__init__(channels, k, bank_size=0, grid=grid, line_length=line_length, line_cap=line_cap)
        self.radius = radius
        self.register_buffer("bank", torch.zeros(grid[0] * grid[1], channels, per_position, dtype=torch.float16))
        self.register_buffer("bank_centre", torch.zeros(grid[0] * grid[1], channels))

    def fit_chunks(self, chunks: list[np.ndarray], seed: int = 0) -> PositionBankDistance:
        """Fit on training feature maps held as consecutive chunks of images, each (N_i, C, h, w), which may be memory
        maps: they are read a block of positions at a time (FIT_VALUES), so 2,000 training images need no more memory
        than a few. The result equals `fit` on their concatenation: a large normal set split across workers by image
        (each extracts and sums its own chunk), then by place (each block of places takes its greedy k-centres over
        every chunk's vectors there, FIT_VALUES at a time). The per-place sums add up exactly; the k-centres are not
        merged from per-chunk k-centres, which would change the bank and, through the position statistics, every
        distance."""
        sizes = [len(chunk) for chunk in chunks]
        images, channels = sum(sizes), chunks[0].shape[1]
        offsets = np.cumsum([0, *sizes[:-1]])
        flats = [chunk.reshape(len(chunk), channels, -1) for chunk in chunks]  # (N_i, C, h * w), views
        self.bank_centre = (
            torch.from_numpy(sum(map(self._place_sums, flats)).T / images).float().contiguous()
        )  # (h * w, C)
        count = min(self.bank.shape[2], images)
        first = int(np.random.default_rng(seed).integers(images))
        step = max(1, min(self.FIT_POSITIONS, self.FIT_VALUES // (images * channels)))
        banks, owners = [], []
        for start in progress(range(0, flats[0].shape[2], step), "choosing the patch bank (k-centres per place)"):
            blocks = [np.ascontiguousarray(flat[:, :, start : start + step], dtype=np.float32) for flat in flats]
            block = torch.from_numpy(blocks[0] if len(blocks) == 1 else np.concatenate(blocks))
            vectors = (block.permute(2, 0, 1) - self.bank_centre[start : start + step, None]).contiguous()
            chosen = greedy_k_centres(vectors, count, first)  # (positions, count): the image behind each bank vector
            banks.append(torch.gather(vectors, 1, chosen.unsqueeze(2).expand(-1, -1, channels)).transpose(1, 2))
            owners.append(chosen)
        self.bank = torch.cat(banks).to(torch.float16).contiguous()
        self._fit_positions(chunks, offsets, torch.cat(owners).unsqueeze(1).numpy(), seed)
        return self

    @staticmethod
    def stacked_exclusions(per_image: list[np.ndarray]) -> np.ndarray:
        """Each image's excluded bank vectors ((h * w, 1, per_position) bool) as distance_map's `excluded` for the
        batch: (h * w, images, per_position)."""
        return np.concatenate(per_image, axis=1)

    def _place_sums(self, flat: np.ndarray) -> np.ndarray:
        """Sum over images of (N, C, P) feature maps, in float64 (C, P), read FIT_VALUES values at a time: the part
        of the per-place mean that chunks of images add up exactly."""
        step = max(1, self.FIT_VALUES // flat[0].size)
        return sum(np.asarray(flat[i : i + step], dtype=np.float64).sum(axis=0) for i in range(0, len(flat), step))

    def distance_map(self, features: torch.Tensor, excluded: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, h, w) -> (B, 1, h, w): mean distance of each position to its k nearest bank features within
        `radius` positions, ignoring the bank vectors that `excluded` (bool, (h * w, 1, per_position)) marks.

        A query's own squared norm is the same for all its candidates, so it is added after the search, and the
        candidates' norms ride in the matrix product as one extra row ([q, 1] . [-2 b; |b|^2]): one pass over the
        (h * w, B, per_position) products instead of three. For k = 1 the search is a minimum, not a top-k."""
        batch, channels, height, width = features.shape
        r = self.radius
        k = min(self.k, self.bank.shape[2])
        padded = F.pad(features, (r, r, r, r))
        bank = self.bank.float()  # also reads a float32 bank, as detector files before float16 storage hold
        candidates = torch.cat(
            (-2 * bank, (bank * bank).sum(dim=1, keepdim=True)), dim=1
        )  # (h * w, C + 1, per_position)
        ones = torch.ones(height * width, batch, 1, dtype=features.dtype)
        nearest = []
        for row in range(2 * r + 1):
            for column in range(2 * r + 1):
                # bank position p meets the query at p - offset, offset = (row - r, column - r)
                queries = padded[:, :, 2 * r - row : 2 * r - row + height, 2 * r - column : 2 * r - column + width]
                queries = (
                    queries.permute(2, 3, 0, 1).reshape(height * width, batch, channels) - self.bank_centre[:, None]
                )
                partial = torch.bmm(torch.cat((queries, ones), dim=2), candidates)  # |b|^2 - 2 q.b
                if excluded is not None:
                    partial = partial.masked_fill(excluded, self.FAR)
                best = _smallest(partial, k, dim=2) + (queries * queries).sum(dim=2, keepdim=True)
                best = best.reshape(height, width, batch, k).permute(2, 3, 0, 1)
                # back to the query's position: query p met bank p + offset, which may lie outside the grid
                best = F.pad(best, (r, r, r, r), value=self.FAR)
                nearest.append(best[:, :, row : row + height, column : column + width])
        squared = _smallest(torch.cat(nearest, dim=1), k, dim=1)
        return squared.clamp_min(0).sqrt().mean(dim=1, keepdim=True)


# Patches: the nearest training feature decides (k = 1), and a part may shift this many positions between images.
PATCH_NEIGHBOURS = 1
BANK_RADIUS = 2


def build_latent_distance(
    config: ScoringConfig, code_size: int, patch_channels: int, image_size: tuple[int, int]
) -> nn.Module:
    """The distance that `config.latent` names, sized for the model's latent vector or its `patch_channels`-channel
    patch features at the (resolved) patch level."""
    patches = config.patches
    if patches is None:
        blocks = 2 if config.latent.round_trip else 1
        return MahalanobisDistance(code_size * blocks, blocks)
    return build_patch_distance(patches, patch_channels, image_size)


def build_patch_distance(
    patches: PatchDistance, channels: int, image_size: tuple[int, int]
) -> PatchNearestNeighbourDistance:
    if patches.level == "auto":
        raise ValueError("scoring.latent.level=auto is resolved at calibration: build a detector per candidate level")
    stride = 2**patches.level
    run = patches.positions_in_run(patches.level)
    if not patches.aligned:
        return PatchNearestNeighbourDistance(
            channels, PATCH_NEIGHBOURS, patches.bank_vectors, None, run, patches.line_cap
        )
    grid = (image_size[0] // stride, image_size[1] // stride)
    return PositionBankDistance(
        channels, PATCH_NEIGHBOURS, patches.bank_vectors, grid, BANK_RADIUS, run, patches.line_cap
    )
