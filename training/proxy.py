"""Proxy training patches synthesised from the REAL per-patch statistics.

No real image set of the competition is reachable here (../shared/data/README.md): only
the real per-patch feature table ``train_features_7147.csv.gz`` (7147 labelled rows).
To train and bundle the neural members anyway, this module synthesises ONE 64 x 64 x 12
patch per real labelled row such that its per-channel statistics equal that row's, while
all spatial texture comes from one label-blind generator.  The label can therefore only
be learnt from the real statistics; the nets learn nothing about real landslide shapes.
Retraining on the real competition patches (``train_nn --patches``) reproduces the
paper's setting.

The generator (``GENERATOR_VERSION`` below), per row and channel c:

1. **Texture (shared by both classes).**  A per-ID random generator
   (``SeedSequence([seed, crc32(ID)])``) draws white noise for 19 latent fields and a
   power-law spectrum ``A(k) = (k^2 + k0^2)^(-slope/4)`` (k0 log-uniform in
   [1/40, 1/5] cycles/px, slope uniform in [2, 4]), filtered by FFT into Gaussian
   random fields (GRFs) on the 64 x 64 grid (periodic).  Channels are fixed linear mixes
   of the fields: NIR own field; R, G, B = rho_c * NIR + sqrt(1 - rho_c^2) * (0.9 visible
   + 0.44 own); SAR post = terrain + orbit + own + speckle; SAR diffs = change + orbit
   change + own + speckle.  Nothing in this step sees the label or the statistics,
   except the optical coupling rho_R, rho_G (step 4).
2. **Marginal (the row's statistics).**  The 4096 pixel values of a channel form a
   sorted, standardised vector s: s[0] = (min - mean)/std and s[-1] = (max - mean)/std
   exactly; the 4094 interior values are alpha + beta * v, where v are standardised
   quantiles of a shape family evaluated at the plotting positions (i + 0.5)/4096, from
   three two-parameter families: sinh-arcsinh of normal quantiles (Jones & Pewsey)
   ``sinh((asinh(q) + eps)/delta)`` (skewed, heavy or light tails), Kumaraswamy
   quantiles (bounded: uniform, U-shaped, skewed) and a two-normal mixture
   ``(1-p) N(0,1) + p N(d,1)`` (bimodal, down to the bound kurt = skew^2 - 2).  alpha and
   beta solve mean 0 and variance 1 in closed form, so mean, std, min and max are exact.
   Skewness and kurtosis are then linear in the interior power sums S3 = sum v^3 and
   S4 = sum v^4, so the shape is found by a vectorised search over precomputed (S3, S4)
   tables (a coarse grid per family, then a 9 x 9 window of the 4x finer grid), among
   shapes whose interior stays inside [min, max].  A Gauss-Newton refinement
   (``_refine_moments``) then nudges the interior of pairs still outside the skew/kurt
   tolerance by a two-parameter polynomial perturbation that vanishes at the bounds,
   re-solving alpha, beta (and any clipping) after each step.
3. **Gaussian copula.**  The channel's values y = mean + std * s are placed on the pixels
   in the rank order of its GRF (rank-preserving), so the marginal is exactly the one of
   step 2 and the texture is the one of step 1.
4. **NDVI / NDWI.**  ndvi = (NIR - R)/(NIR + R) depends on how R and NIR are paired
   spatially, not only on their marginals: rho_R (and rho_G for ndwi = (G - NIR)/(G + NIR))
   is chosen per row from a grid in [-0.95, 0.99] to match the row's ndvi (ndwi) mean,
   std and, more weakly, skew.  Blue uses (rho_R + rho_G)/2.  The index statistics are
   matched only as far as the fixed marginals allow (see ``proxy_fidelity``).

Values are float32.  How closely the proxy matches the real rows, and what generating it
costs: README, "Proxy fidelity".  The result is cached in ``build/proxy/`` (memory-mapped).
"""
from __future__ import annotations

import json
import time
import zlib
from pathlib import Path

import numpy as np

from ..core.channels import BLUE, GREEN, N_CHANNELS, NIR, PATCH_SIZE, RED
from ..core.features import BAND_NAMES
from ..models.package import sha256_file

GENERATOR_VERSION = 1
N_PIX = PATCH_SIZE * PATCH_SIZE
N_FIELDS = 19
DEFAULT_CACHE = Path(__file__).resolve().parents[2] / "build" / "proxy"

# tolerances the tests (and the docstring) state for skew / kurtosis
SKEW_TOL = (0.05, 0.05)  # abs, rel
KURT_TOL = (0.1, 0.1)


# ----------------------------------------------------------------------------- shapes
def _ndtri(p):
    from scipy.special import ndtri

    return ndtri(p)


def _levels(n=N_PIX):
    return (np.arange(1, n - 1) + 0.5) / n  # interior plotting positions


def _standardise_rows(u):
    u = u - u.mean(axis=1, keepdims=True)
    return u / np.sqrt(np.einsum("ij,ij->i", u, u) / u.shape[1])[:, None]


def _sas(q, a, b):
    """sinh-arcsinh of normal quantiles: sinh((asinh(q) + eps) / delta)."""
    return np.sinh((np.arcsinh(q) + a) / b)


def _kumaraswamy(u, a, b):
    """Kumaraswamy(a, b) quantiles (1 - (1 - u)^(1/b))^(1/a): bounded, uniform/U/skewed."""
    return (-np.expm1(np.log1p(-u) / b)) ** (1.0 / a)


_FAMILIES = (
    # name, parameter grids (fine), base points
    ("sinh_arcsinh", np.linspace(-5.0, 5.0, 161), np.geomspace(0.1, 8.0, 129), "normal"),
    ("kumaraswamy", np.geomspace(0.08, 12.0, 129), np.geomspace(0.08, 12.0, 129), "uniform"),
    ("normal_mixture", np.linspace(0.01, 0.99, 97), np.linspace(0.0, 12.0, 97), "mixture"),
)
_MIX_STEP = 0.0025  # x-grid step of the mixture CDF; the d grid step 0.125 is a multiple


class _ShapeTables:
    """(S3, S4, vmin, vmax) of standardised interior shapes on fine grids, one table
    (n_a, n_b, 4) per family of ``_FAMILIES``."""

    def __init__(self):
        self.lev = _levels()
        self.q = _ndtri(self.lev)
        self.tabs = []
        for fam in range(len(_FAMILIES)):
            ga, gb = _FAMILIES[fam][1], _FAMILIES[fam][2]
            self.tabs.append(np.stack([self._sums(self._shapes(fam, a, gb)) for a in ga], axis=0))

    def _shapes(self, fam, a, bs):
        """Unstandardised interior quantiles for one a and a vector of b: (len(bs), m)."""
        bs = np.atleast_1d(np.asarray(bs, np.float64))
        kind = _FAMILIES[fam][3]
        if kind == "normal":
            return _sas(self.q[None, :], a, bs[:, None])
        if kind == "uniform":
            return _kumaraswamy(self.lev[None, :], a, bs[:, None])
        from scipy.special import ndtr

        # (1 - p) N(0, 1) + p N(d, 1): invert the CDF on a shared x grid
        x = np.arange(-9.0, 12.0 + 9.0 + _MIX_STEP / 2, _MIX_STEP)
        phi = ndtr(x)
        out = np.empty((len(bs), self.lev.size))
        for k, d in enumerate(bs):
            shift = int(round(d / _MIX_STEP))
            phid = np.concatenate([np.zeros(shift), phi[: phi.size - shift]]) if shift else phi
            out[k] = np.interp(self.lev, (1 - a) * phi + a * phid, x)
        return out

    @staticmethod
    def _sums(u):
        v = _standardise_rows(np.asarray(u, dtype=np.float64))
        v2 = v * v
        return np.stack([(v2 * v).sum(1), (v2 * v2).sum(1), v[:, 0], v[:, -1]], axis=1)

    def shape(self, fam, i, j):
        """The standardised interior vector v for one grid point."""
        return _standardise_rows(self._shapes(fam, _FAMILIES[fam][1][i], [_FAMILIES[fam][2][j]]))[0]


_TABLES: _ShapeTables | None = None


def _tables() -> _ShapeTables:
    global _TABLES
    if _TABLES is None:
        _TABLES = _ShapeTables()
    return _TABLES


def _moment_terms(lo, hi, n=N_PIX):
    """alpha, beta and the linear coefficients of skew/kurt in (S3, S4)."""
    m = n - 2
    alpha = -(lo + hi) / m
    beta2 = (n - lo**2 - hi**2) / m - alpha**2
    beta = np.sqrt(np.clip(beta2, 1e-12, None))
    c0 = (lo**3 + hi**3 + m * (alpha**3 + 3 * alpha * beta**2)) / n
    c1 = beta**3 / n
    k0 = (lo**4 + hi**4 + m * (alpha**4 + 6 * alpha**2 * beta**2)) / n - 3.0
    k1 = 4 * alpha * beta**3 / n
    k2 = beta**4 / n
    return alpha, beta, c0, c1, k0, k1, k2


def _score(tab, lo, hi, skew, kurt, terms):
    """Error of candidate shapes tab (K, 4) or (P, K, 4) for each pair (P,) -> (P, K)."""
    alpha, beta, c0, c1, k0, k1, k2 = (t[:, None] for t in terms)
    if tab.ndim == 2:
        tab = tab[None]
    s3, s4, vmin, vmax = (tab[..., i] for i in range(4))
    sk = c0 + c1 * s3
    ku = k0 + k1 * s3 + k2 * s4
    ts = SKEW_TOL[0] + SKEW_TOL[1] * np.abs(skew)[:, None]
    tk = KURT_TOL[0] + KURT_TOL[1] * np.abs(kurt)[:, None]
    err = ((sk - skew[:, None]) / ts) ** 2 + ((ku - kurt[:, None]) / tk) ** 2
    # the interior must stay inside [lo, hi]; a violation is allowed but heavily penalised
    viol = np.maximum(lo[:, None] - (alpha + beta * vmin), 0) + np.maximum(alpha + beta * vmax - hi[:, None], 0)
    return np.where(viol > 1e-9, 1e6 * (1 + viol), err)


def fit_shapes(lo, hi, skew, kurt, chunk=2048):
    """Best (family, i, j, error) per pair of standardised bounds / target moments (P,)."""
    T = _tables()
    lo, hi, skew, kurt = (np.asarray(a, np.float64) for a in (lo, hi, skew, kurt))
    P = lo.shape[0]
    fam = np.zeros(P, np.int64)
    ii = np.zeros(P, np.int64)
    jj = np.zeros(P, np.int64)
    best = np.full(P, np.inf)
    st = 4
    off = np.arange(-st, st + 1)
    for s in range(0, P, chunk):
        sl = slice(s, min(P, s + chunk))
        terms = _moment_terms(lo[sl], hi[sl])
        args = (lo[sl], hi[sl], skew[sl], kurt[sl])
        for f, full in enumerate(T.tabs):
            tab = full[::st, ::st]
            e = _score(tab.reshape(-1, 4), *args, terms)
            k = e.argmin(axis=1)
            i0, j0 = k // tab.shape[1] * st, k % tab.shape[1] * st
            # refine in a 9 x 9 window of the fine grid
            gi = np.clip(i0[:, None, None] + off[None, :, None], 0, full.shape[0] - 1)
            gj = np.clip(j0[:, None, None] + off[None, None, :], 0, full.shape[1] - 1)
            gi, gj = np.broadcast_arrays(gi, gj)
            e = _score(full[gi, gj].reshape(len(k), -1, 4), *args, terms)
            k = e.argmin(axis=1)
            r = np.arange(len(k))
            eb = e[r, k]
            better = eb < best[sl]
            fam[sl] = np.where(better, f, fam[sl])
            ii[sl] = np.where(better, gi.reshape(len(k), -1)[r, k], ii[sl])
            jj[sl] = np.where(better, gj.reshape(len(k), -1)[r, k], jj[sl])
            best[sl] = np.where(better, eb, best[sl])
    return fam, ii, jj, best


def _fix_interior(v, lo, hi, n=N_PIX, iters=60):
    """Clip interior values (P, m) into [lo, hi] and re-solve an affine map of the
    unclipped ones so that, with the endpoints lo and hi, mean is 0 and variance 1."""
    bad = np.nonzero((v.min(1) < lo - 1e-12) | (v.max(1) > hi + 1e-12))[0]
    if bad.size == 0:
        return v
    v = v.copy()
    v[bad] = _fix_rows(v[bad], lo[bad], hi[bad], n, iters)
    return v


def _fix_rows(v, lo, hi, n, iters):
    for _ in range(iters):
        if not ((v < lo[:, None] - 1e-12) | (v > hi[:, None] + 1e-12)).any():
            break
        v = np.clip(v, lo[:, None], hi[:, None])
        free = (v > lo[:, None]) & (v < hi[:, None])
        nf = np.maximum(free.sum(1), 1)
        fs1 = np.where(free, 0, v).sum(1) + lo + hi
        fs2 = np.where(free, 0, v**2).sum(1) + lo**2 + hi**2
        mu = np.where(free, v, 0).sum(1) / nf
        var = np.where(free, (v - mu[:, None]) ** 2, 0).sum(1) / nf
        a_new = -fs1 / nf
        b = np.sqrt(np.clip((n - fs2) / nf - a_new**2, 0, None) / np.maximum(var, 1e-30))
        v = np.where(free, a_new[:, None] + b[:, None] * (v - mu[:, None]), v)
    return np.clip(v, lo[:, None], hi[:, None])


def _affine_interior(x, lo, hi, n=N_PIX):
    """Affine map of interior values x (P, m) so that, with the endpoints lo and hi, the
    sample has mean 0 and variance 1; then clip/re-solve into [lo, hi]."""
    m = x.shape[1]
    mu = x.mean(1, keepdims=True)
    d = x - mu
    sd = np.sqrt(np.einsum("ij,ij->i", d, d) / m)[:, None]
    alpha = -(lo + hi) / m
    beta = np.sqrt(np.clip((n - lo**2 - hi**2) / m - alpha**2, 1e-12, None))
    return _fix_interior(alpha[:, None] + beta[:, None] * d / np.maximum(sd, 1e-30), lo, hi)


def _sk_ku(x, lo, hi, n=N_PIX):
    """Skew and kurtosis of [lo, x..., hi] for a standardised sample (mean 0, var 1)."""
    x2 = x * x
    s3 = (x2 * x).sum(1) + lo**3 + hi**3
    s4 = (x2 * x2).sum(1) + lo**4 + hi**4
    s2 = x2.sum(1) + lo**2 + hi**2
    s1 = x.sum(1) + lo + hi
    mu = s1 / n
    var = s2 / n - mu**2
    m3 = s3 / n - 3 * mu * s2 / n + 2 * mu**3
    m4 = s4 / n - 4 * mu * s3 / n + 6 * mu**2 * s2 / n - 3 * mu**4
    return m3 / var**1.5, m4 / var**2 - 3.0


def _perturb(x, lo, hi, a, b):
    """x + a w (x^2 - 1) + b w (x^3 - 3x), with w = (x - lo)(hi - x) / ((hi - lo)/2)^2 a
    bump that vanishes at the bounds (so the move does not push values out of them)."""
    x2 = x * x
    w = (x - lo[:, None]) * (hi[:, None] - x) / (0.25 * (hi - lo) ** 2)[:, None]
    return _affine_interior(x + w * (a[:, None] * (x2 - 1.0) + b[:, None] * (x2 * x - 3.0 * x)), lo, hi)


def _refine_moments(x, lo, hi, skew, kurt, iters=10):
    """Gauss-Newton on a two-parameter polynomial perturbation of the interior values so
    that skew/kurt reach the targets where the shape families fell short.  Keeps the
    endpoints, mean 0, variance 1 and the bounds; only pairs outside tolerance move."""
    ts = SKEW_TOL[0] + SKEW_TOL[1] * np.abs(skew)
    tk = KURT_TOL[0] + KURT_TOL[1] * np.abs(kurt)

    def resid(xx, sel):
        sk, ku = _sk_ku(xx, lo[sel], hi[sel])
        return np.stack([(sk - skew[sel]) / ts[sel], (ku - kurt[sel]) / tk[sel]], axis=1)

    r = resid(x, slice(None))
    stalled = np.zeros(x.shape[0], bool)
    for _ in range(iters):
        act = np.nonzero((np.abs(r).max(1) > 0.7) & ~stalled)[0]  # aim inside the tolerance
        if act.size == 0:
            break
        xa, la, ha = x[act], lo[act], hi[act]
        ra = r[act]
        h = 1e-4
        z = np.zeros(act.size)
        Ja = (resid(_perturb(xa, la, ha, z + h, z), act) - ra) / h
        Jb = (resid(_perturb(xa, la, ha, z, z + h), act) - ra) / h
        J = np.stack([Ja, Jb], axis=2)  # (p, 2 resid, 2 params)
        JtJ = np.einsum("pki,pkj->pij", J, J) + 1e-6 * np.eye(2)
        g = np.einsum("pki,pk->pi", J, ra)
        step = -np.linalg.solve(JtJ, g[..., None])[..., 0]
        step = np.clip(step, -0.2, 0.2)
        e0 = (ra**2).sum(1)
        done = np.zeros(act.size, bool)
        for scale in (1.0, 0.5, 0.25):
            todo = np.nonzero(~done)[0]
            if todo.size == 0:
                break
            sel = act[todo]
            xn = _perturb(xa[todo], la[todo], ha[todo], scale * step[todo, 0], scale * step[todo, 1])
            rn = resid(xn, sel)
            ok = (rn**2).sum(1) < e0[todo]
            x[sel[ok]] = xn[ok]
            r[sel[ok]] = rn[ok]
            done[todo[ok]] = True
        # a pair that improved by less than 10% will not get anywhere: stop moving it
        stalled[act] = ~done | ((r[act] ** 2).sum(1) > 0.9 * e0)
    return x


def sorted_marginals(mean, std, vmin, vmax, skew, kurt):
    """Sorted pixel values (P, 4096) float64 with exactly these mean/std/min/max and
    (approximately) this skew/kurt; all inputs (P,)."""
    T = _tables()
    mean, std, vmin, vmax, skew, kurt = (np.asarray(a, np.float64) for a in (mean, std, vmin, vmax, skew, kurt))
    out = np.repeat(mean[:, None], N_PIX, axis=1)
    ok = np.isfinite(std) & (std > 0) & np.isfinite(vmin) & np.isfinite(vmax)
    ok &= (vmin < mean) & (vmax > mean)
    if not ok.any():
        return out
    idx = np.nonzero(ok)[0]
    lo = (vmin[idx] - mean[idx]) / std[idx]
    hi = (vmax[idx] - mean[idx]) / std[idx]
    sk = np.nan_to_num(skew[idx])
    ku = np.nan_to_num(kurt[idx])
    fam, ii, jj, _ = fit_shapes(lo, hi, sk, ku)
    alpha, beta = _moment_terms(lo, hi)[:2]
    # build the interior shapes, grouped by unique grid point (few thousand at most)
    key = (fam * 1000 + ii) * 1000 + jj
    uniq, inv = np.unique(key, return_inverse=True)
    shapes = np.empty((len(uniq), N_PIX - 2))
    for u, k in enumerate(uniq):
        shapes[u] = T.shape(int(k // 1_000_000), int(k // 1000 % 1000), int(k % 1000))
    interior = alpha[:, None] + beta[:, None] * shapes[inv]
    interior = _fix_interior(interior, lo, hi)  # a no-op for feasible shapes
    interior = _refine_moments(interior, lo, hi, sk, ku)
    s = np.concatenate([lo[:, None], interior, hi[:, None]], axis=1)
    out[idx] = mean[idx, None] + std[idx, None] * s
    return out


# ----------------------------------------------------------------------------- texture
def _seed_for(seed: int, pid: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(pid.encode("utf-8"))]))


def latent_fields(ids, seed: int = 42) -> np.ndarray:
    """(N, N_FIELDS + 1, 64, 64) unit-variance GRFs (+ 1 white-noise speckle field last).

    Depends only on (seed, ID): the same for both classes."""
    n = len(ids)
    white = np.empty((n, N_FIELDS + 1, PATCH_SIZE, PATCH_SIZE))
    k0 = np.empty(n)
    slope = np.empty(n)
    for i, pid in enumerate(ids):
        rng = _seed_for(seed, pid)
        k0[i] = np.exp(rng.uniform(np.log(1 / 40), np.log(1 / 5)))
        slope[i] = rng.uniform(2.0, 4.0)
        white[i] = rng.standard_normal((N_FIELDS + 1, PATCH_SIZE, PATCH_SIZE))
    from scipy import fft as sfft

    fy = np.fft.fftfreq(PATCH_SIZE)[:, None]
    fx = np.fft.rfftfreq(PATCH_SIZE)[None, :]
    k2 = fx**2 + fy**2
    amp = ((k2[None] + k0[:, None, None] ** 2) ** (-slope[:, None, None] / 4)).astype(np.float32)  # (n, 64, 33)
    spec = sfft.rfft2(white[:, :N_FIELDS].astype(np.float32)) * amp[:, None]
    g = sfft.irfft2(spec, s=(PATCH_SIZE, PATCH_SIZE)).astype(np.float64)
    g -= g.mean(axis=(2, 3), keepdims=True)
    g /= g.std(axis=(2, 3), keepdims=True)
    white[:, :N_FIELDS] = g
    return white


def channel_fields(F: np.ndarray, rho_r, rho_g) -> np.ndarray:
    """Channel rank fields (N, 12, 64, 64) from latent fields and the optical couplings."""
    n = F.shape[0]
    z = np.empty((n, N_CHANNELS) + F.shape[2:])
    W = F[:, N_FIELDS]  # speckle
    nir, vis = F[:, 0], F[:, 1]
    rr = np.asarray(rho_r, np.float64).reshape(n, 1, 1)
    rg = np.asarray(rho_g, np.float64).reshape(n, 1, 1)
    rb = (rr + rg) / 2
    for ch, own, r in ((RED, F[:, 2], rr), (GREEN, F[:, 3], rg), (BLUE, F[:, 4], rb)):
        z[:, ch] = r * nir + np.sqrt(1 - r**2) * (0.9 * vis + 0.436 * own)
    z[:, NIR] = nir
    terrain, change = F[:, 5], F[:, 12]
    # SAR post: desc VV, VH (4, 5), asc VV, VH (8, 9)
    for ch, orbit, own in ((4, 6, 8), (5, 6, 9), (8, 7, 10), (9, 7, 11)):
        z[:, ch] = 0.6 * terrain + 0.5 * F[:, orbit] + 0.4 * F[:, own] + 0.5 * np.roll(W, ch, axis=-1)
    # SAR diffs: desc dVV, dVH (6, 7), asc dVV, dVH (10, 11)
    for ch, orbit, own in ((6, 13, 15), (7, 13, 16), (10, 14, 17), (11, 14, 18)):
        z[:, ch] = 0.5 * change + 0.5 * F[:, orbit] + 0.5 * F[:, own] + 0.5 * np.roll(W, ch, axis=-2)
    # a little pixel noise on optical too (breaks ties, sensor noise)
    z[:, :4] += 0.1 * W[:, None]
    return z


def _place(z, sorted_vals):
    """Put sorted values (..., P) on pixels in the rank order of z (..., H, W).

    z is quantised to int16 (1/5000 of its std, +-6.5 std) so numpy's radix sort applies
    (10x faster than a float sort); ties keep pixel order (stable), deterministically."""
    flat = z.reshape(z.shape[:-2] + (-1,))
    flat = flat - flat.mean(-1, keepdims=True)
    flat = flat * (5000.0 / np.maximum(flat.std(-1, keepdims=True), 1e-12))
    flat = np.clip(np.rint(flat), -32767, 32767).astype(np.int16)
    order = np.argsort(flat, axis=-1, kind="stable")
    out = np.empty_like(sorted_vals)
    np.put_along_axis(out, order, sorted_vals, axis=-1)
    return out.reshape(z.shape)


def _index_stats(a, b):
    """mean/std/skew of (a - b)/(a + b) over the last axis."""
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    den = a + b
    x = (a - b) / np.where(den == 0, np.float32(1), den)
    m = x.mean(-1)
    d = x - m[..., None]
    d2 = d * d
    v = d2.mean(-1)
    sd = np.sqrt(v)
    sk = (d2 * d).mean(-1) / np.maximum(v, 1e-30) ** 1.5
    return m, sd, sk


RHO_GRID = np.linspace(-0.95, 0.99, 9)


def _fit_rho(nir_vals, other_vals, z_nir, z_own_vis, target, sign):
    """Choose rho per row so that index = sign*(NIR - X)/(NIR + X) matches target (mean,std,skew).

    nir_vals (n, P) already on pixels; other_vals (n, P) sorted; returns rho (n,)."""
    tm, ts, tk = (np.asarray(t, np.float64) for t in target)
    n = nir_vals.shape[0]
    scale = np.maximum(ts, 1e-6)

    def loss(rho):
        zx = rho[:, None] * z_nir + np.sqrt(1 - rho[:, None] ** 2) * z_own_vis
        x = _place(zx.reshape(n, PATCH_SIZE, PATCH_SIZE), other_vals).reshape(n, -1)
        a, b = (nir_vals, x) if sign > 0 else (x, nir_vals)
        m, sd, sk = _index_stats(a, b)
        return ((m - tm) / scale) ** 2 + ((sd - ts) / scale) ** 2 + 0.1 * ((sk - tk) / (1 + np.abs(tk))) ** 2

    losses = np.stack([loss(np.full(n, r)) for r in RHO_GRID], axis=1)
    k = losses.argmin(1)
    best = RHO_GRID[k]
    bl = losses[np.arange(n), k]
    step = RHO_GRID[1] - RHO_GRID[0]
    for frac in (0.5, 0.25, 0.125):  # a local bisection-like search around the best
        for sgn in (-1, 1):
            cand = np.clip(best + sgn * frac * step, -0.99, 0.995)
            lc = loss(cand)
            better = lc < bl
            best = np.where(better, cand, best)
            bl = np.where(better, lc, bl)
    return best


def generate_patches(feats: dict, ids, seed: int = 42) -> np.ndarray:
    """Proxy patches (N, 12, 64, 64) float32 for rows of a feature table (see module doc)."""
    n = len(ids)
    stats = {}
    for s in ("mean", "std", "min", "max", "skew", "kurt"):
        stats[s] = np.stack([np.asarray(feats[f"{b}_{s}"], np.float64) for b in BAND_NAMES], axis=1)  # (n, 12)
    flat = {s: v.reshape(-1) for s, v in stats.items()}
    marg = sorted_marginals(flat["mean"], flat["std"], flat["min"], flat["max"], flat["skew"], flat["kurt"])
    marg = marg.reshape(n, N_CHANNELS, N_PIX)
    F = latent_fields(ids, seed)
    # optical couplings to match ndvi (R, NIR) and ndwi (G, NIR)
    z0 = channel_fields(F, np.zeros(n), np.zeros(n))
    nir_px = _place(z0[:, NIR], marg[:, NIR]).reshape(n, -1)
    z_nir = F[:, 0].reshape(n, -1)
    W = F[:, N_FIELDS].reshape(n, -1)

    def vis(own):
        return 0.9 * F[:, 1].reshape(n, -1) + 0.436 * F[:, own].reshape(n, -1)

    def tgt(name):
        return tuple(np.asarray(feats[f"{name}_{s}"], np.float64) for s in ("mean", "std", "skew"))

    # the +0.1 * speckle of optical channels is part of the rank field
    rho_r = _fit_rho(nir_px, marg[:, RED], z_nir + 0.1 * W, vis(2), tgt("ndvi"), +1)
    rho_g = _fit_rho(nir_px, marg[:, GREEN], z_nir + 0.1 * W, vis(3), tgt("ndwi"), -1)
    z = channel_fields(F, rho_r, rho_g)
    out = _place(z, marg)
    return out.astype(np.float32)


# ----------------------------------------------------------------------------- cache
def _file_sha(path: Path) -> str:
    return sha256_file(path)


def _generate_chunk(feats, ids, seed):
    return generate_patches(feats, ids, seed)


def build_proxy(csv_path, cache_dir=DEFAULT_CACHE, seed: int = 42, chunk: int = 256, limit: int | None = None,
                progress=None, log=print, workers: int = 1):
    """Generate (or reuse) the proxy patch cache for a feature table.

    Returns (ids, labels, patches) with patches an (N, 12, 64, 64) float32 array mapped
    from ``<cache>/proxy_v<ver>_s<seed>_<sha8>[_n<limit>].npy`` (+ ``.json`` metadata).
    ``workers`` > 1 runs chunks in spawned processes (only from a script with a
    ``__main__`` guard, never inside QGIS); every row depends only on its own statistics
    and ID, so the result is bit-identical for any chunking or worker count."""
    from .feature_table import load_feature_table

    csv_path = Path(csv_path)
    ids, labels, feats = load_feature_table(csv_path)
    if limit is not None:
        ids, labels = ids[:limit], labels[:limit]
        feats = {k: v[:limit] for k, v in feats.items()}
    sha = _file_sha(csv_path)
    stem = f"proxy_v{GENERATOR_VERSION}_s{seed}_{sha[:8]}" + (f"_n{limit}" if limit is not None else "")
    cache_dir = Path(cache_dir)
    npy, meta = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
    if npy.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        if info.get("complete") and info.get("ids") == ids:
            return ids, labels, np.load(npy, mmap_mode="r")
    cache_dir.mkdir(parents=True, exist_ok=True)
    n = len(ids)
    tmp = cache_dir / f"{stem}.partial.npy"
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, N_CHANNELS, PATCH_SIZE, PATCH_SIZE))
    t0 = time.time()
    starts = list(range(0, n, chunk))
    workers = max(1, min(int(workers), len(starts)))
    done = 0

    def job(s):
        e = min(n, s + chunk)
        return s, e, ({k: v[s:e] for k, v in feats.items()}, ids[s:e], seed)

    if workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
            jobs = [job(s) for s in starts]
            futs = [(s, e, ex.submit(_generate_chunk, *args)) for s, e, args in jobs]
            for s, e, fut in futs:
                arr[s:e] = fut.result()
                done += e - s
                if progress:
                    progress(done / n, f"proxy patches {done}/{n}")
    else:
        for s in starts:
            s, e, args = job(s)
            arr[s:e] = _generate_chunk(*args)
            if progress:
                progress(e / n, f"proxy patches {e}/{n}")
    arr.flush()
    del arr
    tmp.replace(npy)
    meta.write_text(json.dumps({
        "generator_version": GENERATOR_VERSION, "seed": seed, "source": csv_path.name, "source_sha256": sha,
        "n": n, "ids": ids, "labels": [int(v) for v in labels], "complete": True,
        "seconds": round(time.time() - t0, 1),
        "note": "SYNTHETIC proxy patches generated from the real per-patch statistics; NOT real imagery",
    }))
    if log:
        log(f"proxy: generated {n} patches in {time.time() - t0:.1f} s -> {npy}")
    return ids, labels, np.load(npy, mmap_mode="r")


def proxy_fidelity(patches: np.ndarray, feats: dict) -> dict:
    """Compare patch_features of generated patches with their rows.

    Returns {stat: max abs error} for mean/std/min/max (relative to the row's std) and
    the fraction of (row, channel) pairs within the skew/kurt tolerances, plus ndvi/ndwi
    mean/std errors relative to the row's index std."""
    from ..core.features import patch_features

    got = patch_features(np.asarray(patches))
    n = patches.shape[0]
    res = {}
    for s in ("mean", "std", "min", "max"):
        e = [np.abs(got[f"{b}_{s}"].astype(np.float64) - feats[f"{b}_{s}"][:n]) / np.maximum(feats[f"{b}_std"][:n], 1e-9)
             for b in BAND_NAMES]
        res[f"{s}_max_err_in_std"] = float(np.max(e))
    for s, (ta, tr) in (("skew", SKEW_TOL), ("kurt", KURT_TOL)):
        ok = []
        for b in BAND_NAMES:
            t = feats[f"{b}_{s}"][:n].astype(np.float64)
            ok.append(np.abs(got[f"{b}_{s}"] - t) <= ta + tr * np.abs(t))
        res[f"{s}_within_tol"] = float(np.mean(ok))
    for name in ("ndvi", "ndwi"):
        sd = np.maximum(feats[f"{name}_std"][:n].astype(np.float64), 1e-9)
        for s in ("mean", "std"):
            e = np.abs(got[f"{name}_{s}"] - feats[f"{name}_{s}"][:n]) / sd
            res[f"{name}_{s}_median_err_in_std"] = float(np.median(e))
        res[f"{name}_corr_std"] = (float(np.corrcoef(got[f"{name}_std"], feats[f"{name}_std"][:n])[0, 1])
                                   if n > 2 else float("nan"))
    return res
