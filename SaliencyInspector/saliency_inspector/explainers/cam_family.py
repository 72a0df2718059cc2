"""pytorch-grad-cam's activation × gradient CAMs in 2-D and 3-D: pure functions of A and G.

A and G are the target layer's activations and ∂y_c/∂A, shapes (B, K, *spatial); each function
returns (B, *spatial), raw (no ReLU, no normalisation: display choices). Each is written from the
peer's source (jacobgil/pytorch-grad-cam 1.5.5, ``pytorch_grad_cam/<file>.py`` named in each
docstring) and cross-checked against it in ``Testing/Python/test_cam_family.py``.

Three kinds, marked by attributes the engine (:func:`cam.cam_pass`) reads:

- ``f.terms(A, G)``: a channel-sum method (map = terms.sum(1)); ``eigen_smooth`` replaces the sum
  by the first principal component of the terms (:func:`projection`), as the peer does.
- ``f.class_independent``: EigenCAM, KPCA-CAM, FEM use A only: the same map for every class,
  computed once per layer (no gradient is taken for them).
- ``f.context``: the function also takes a :class:`CamContext` (FinerCAM: gradients of other
  classes; ShapleyCAM: a Hessian-vector product; KPCA/FEM: settings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import InputError

EPS_XGRAD = 1e-7  # pytorch_grad_cam/xgrad_cam.py


@dataclass
class CamContext:
    """What a context CAM may ask beyond (A, G): the logits (B, K), the class index, the settings,
    ``grad(k)``: ∂y_k/∂A of any class k (taken lazily from the same forward pass), and ``hvp()``:
    H·A with H = ∂²y_c/∂A² (zeros when y_c is linear in A)."""

    logits: object
    index: int
    settings: object
    grad: Callable
    hvp: Callable


def _spatial_shape(weights, A):
    return weights.view(*weights.shape, *[1] * (A.ndim - 2))


def channel_sum(terms):
    """A CAM ``terms(A, G).sum(1)`` that keeps ``terms`` for ``eigen_smooth``."""

    def cam(A, G):
        return terms(A, G).sum(1)

    cam.terms = terms
    cam.__name__, cam.__doc__ = terms.__name__, terms.__doc__
    return cam


def projection(T):
    """First principal component of the channels of T (B, K, *spatial) at every voxel (B, *spatial).

    pytorch-grad-cam's ``get_2d_projection`` (``utils/svd_on_activations.py``): the voxels × channels
    matrix is centred over voxels and projected on its first right singular vector. The SVD's sign
    is arbitrary (the peer keeps LAPACK's); here it is chosen so that the projection correlates
    positively with the channel sum T.sum(1), so ``eigen_smooth`` smooths the map it replaces.
    Uses the thin SVD (the peer's ``full_matrices=True`` builds a voxels × voxels matrix).
    """
    import torch

    T = torch.nan_to_num(T.detach())
    flat = T.flatten(2).transpose(1, 2).double()  # (B, N, K)
    centred = flat - flat.mean(1, keepdim=True)
    _u, _s, vh = torch.linalg.svd(centred, full_matrices=False)
    proj = centred @ vh[:, 0, :].unsqueeze(-1)  # (B, N, 1)
    ref = flat.sum(2, keepdim=True)
    sign = torch.sign(((proj - proj.mean(1, keepdim=True)) * (ref - ref.mean(1, keepdim=True))).sum(1, keepdim=True))
    proj = proj * torch.where(sign == 0, torch.ones_like(sign), sign)
    return proj[..., 0].reshape(T.shape[0], *T.shape[2:]).to(T.dtype)


def kernel_projection(A, kernel: str = "sigmoid", gamma: float | None = None, coef0: float = 1.0, degree: int = 3):
    """First kernel-PCA component of the voxels (rows) of A (B, K, *spatial) → (B, *spatial).

    scikit-learn's ``KernelPCA(n_components=1, kernel, gamma).fit_transform`` as pytorch-grad-cam's
    ``get_2d_projection_kernel`` calls it (voxels × channels, centred over voxels): the centred
    kernel matrix's top eigenvector times √eigenvalue, its sign as scikit-learn's ``svd_flip``
    (largest |entry| positive). ``gamma`` None: 1 / channels (scikit-learn's default). Kernels:
    sigmoid tanh(γ⟨x,y⟩+c0), rbf exp(−γ|x−y|²), poly (γ⟨x,y⟩+c0)^d, linear, cosine.
    """
    import torch

    flat = torch.nan_to_num(A.detach()).flatten(2).transpose(1, 2).double()  # (B, N, K)
    n = flat.shape[1]
    if n > 20000:
        raise InputError(f"KPCA-CAM builds a voxels × voxels kernel: {n} feature voxels is too many "
                         "(at most 20000); choose a coarser layer")
    X = flat - flat.mean(1, keepdim=True)
    g = 1.0 / X.shape[2] if gamma is None else float(gamma)
    dot = X @ X.transpose(1, 2)
    if kernel == "sigmoid":
        Km = torch.tanh(g * dot + coef0)
    elif kernel == "rbf":
        sq = (X * X).sum(2)
        Km = torch.exp(-g * (sq[:, :, None] + sq[:, None, :] - 2 * dot).clamp(min=0))
    elif kernel == "poly":
        Km = (g * dot + coef0) ** degree
    elif kernel == "linear":
        Km = dot
    elif kernel == "cosine":
        norm = X.norm(dim=2).clamp(min=1e-300)
        Km = dot / (norm[:, :, None] * norm[:, None, :])
    else:
        raise InputError(f"KPCA-CAM kernel {kernel!r} is not one of sigmoid, rbf, poly, linear, cosine")
    one = torch.full((n, n), 1.0 / n, dtype=Km.dtype, device=Km.device)
    Kc = Km - one @ Km - Km @ one + one @ Km @ one  # sklearn.preprocessing.KernelCenterer
    vals, vecs = torch.linalg.eigh(Kc)
    top, vec = vals[:, -1], vecs[:, :, -1]  # (B,), (B, N)
    pick = vec.abs().argmax(1, keepdim=True)
    vec = vec * torch.sign(vec.gather(1, pick))  # sklearn.utils.extmath.svd_flip, u-based
    proj = vec * top.clamp(min=0).sqrt()[:, None]
    return proj.reshape(A.shape[0], *A.shape[2:]).to(A.dtype)


# ---- channel-sum methods ------------------------------------------------------------------------
@channel_sum
def gradcam_elementwise(A, G):
    """Grad-CAM element-wise (``grad_cam_elementwise.py``): Σ_k ReLU(G_k ⊙ A_k). Non-negative."""
    return (G * A).clamp(min=0)


@channel_sum
def xgradcam(A, G):
    """XGrad-CAM (Fu et al. 2020; ``xgrad_cam.py``): Σ_k w_k A_k with
    w_k = Σ_x G_k(x) A_k(x) / (Σ_x A_k(x) + 1e-7). Signed."""
    w = (G * A).flatten(2).sum(2) / (A.flatten(2).sum(2) + EPS_XGRAD)
    return _spatial_shape(w, A) * A


@channel_sum
def layercam(A, G):
    """Layer-CAM (Jiang et al. 2021; ``layer_cam.py``): Σ_k ReLU(G_k) ⊙ A_k. Non-negative where
    A ≥ 0 (after a ReLU), signed at a pre-activation layer."""
    return G.clamp(min=0) * A


def gradcam_terms(A, G):
    """Grad-CAM's per-channel terms mean_x(G_k) A_k (for eigen_smooth of ``gradcam``)."""
    return _spatial_shape(G.flatten(2).mean(2), A) * A


def hirescam_terms(A, G):
    """HiResCAM's per-channel terms G_k ⊙ A_k (for eigen_smooth of ``hirescam``)."""
    return G * A


# ---- projections --------------------------------------------------------------------------------
def eigencam(A, G):
    """Eigen-CAM (Muhammad & Yeasin 2020; ``eigen_cam.py``): the first principal component of the
    activations' channels at every voxel (:func:`projection`). Uses no gradient: the SAME map for
    every class. Signed (sign fixed to agree with Σ_k A_k)."""
    return projection(A)


eigencam.class_independent = True


def eigengradcam(A, G):
    """Eigen-Grad-CAM (``eigen_grad_cam.py``): the first principal component of G ⊙ A's channels
    (:func:`projection`). Class-specific; signed (sign fixed to agree with HiResCAM's Σ_k G_k A_k)."""
    return projection(G * A)


def kpcacam(A, G, ctx):
    """KPCA-CAM (Karmani et al. 2024; ``kpca_cam.py``): the first kernel-PCA component of the
    activations' channels (:func:`kernel_projection`, kernel ``settings.kpca_kernel``, γ
    ``settings.kpca_gamma``). Uses no gradient: the same map for every class. Signed."""
    s = ctx.settings
    return kernel_projection(A, getattr(s, "kpca_kernel", "sigmoid"), getattr(s, "kpca_gamma", None))


kpcacam.class_independent = True
kpcacam.context = True


def fem(A, G, ctx):
    """FEM, the Feature Explanation Method (Fuad et al. 2020; ``fem.py``): Σ_k w_k A_k with w_k the
    fraction of voxels where A_k > mean(A_k) + k·std(A_k) (k = ``settings.fem_k``, population std).
    Uses no gradient: the same map for every class. Non-negative where A ≥ 0."""
    k = float(getattr(ctx.settings, "fem_k", 2.0))
    flat = A.flatten(2)
    th = flat.mean(2) + k * flat.std(2, unbiased=False)
    w = (flat > th[:, :, None]).to(A.dtype).mean(2)
    return (_spatial_shape(w, A) * A).sum(1)


fem.class_independent = True
fem.context = True


# ---- context methods ----------------------------------------------------------------------------
def finer_weights(logits, index: int, alpha: float = 1.0, compare: int = 3):
    """∂f/∂y for FinerCAM's target f = Σ_j p_j (y_c − α y_j) / (Σ_j p_j + 1e-9) over the ``compare``
    classes j whose logits are nearest y_c (``utils/model_targets.py`` FinerWeightedTarget; p =
    softmax(y)): (B, K). The gradient of f at the layer is then Σ_m (∂f/∂y_m) ∂y_m/∂A."""
    import torch

    y = logits.detach().double().clone().requires_grad_(True)
    order = torch.argsort((y.detach() - y.detach()[:, index:index + 1]).abs(), dim=1, stable=True)
    rows = []
    for b in range(y.shape[0]):
        others = [int(j) for j in order[b] if int(j) != index][:compare]
        if not others:
            raise InputError("FinerCAM compares a class with similar classes: the model has only one output")
        p = torch.softmax(y[b], dim=-1)
        num = sum(p[j] * (y[b, index] - alpha * y[b, j]) for j in others)
        (g,) = torch.autograd.grad(num / (sum(p[j] for j in others) + 1e-9), y)
        rows.append(g[b])
    return torch.stack(rows).to(logits.dtype)


def finercam(A, G, ctx):
    """Finer-CAM (Zhang et al. 2025; ``finer_cam.py`` with its default Grad-CAM base): Grad-CAM of the
    target f = Σ_j p_j (y_c − α y_j)/Σ_j p_j, j the ``settings.finer_compare`` classes with the
    nearest logits (:func:`finer_weights`): what tells class c apart from its look-alikes. Its
    gradient is a combination of the classes' gradients, so it comes from the same pass. Signed."""
    s = ctx.settings
    coef = finer_weights(ctx.logits, ctx.index, float(getattr(s, "finer_alpha", 1.0)),
                         int(getattr(s, "finer_compare", 3)))
    Gf = None
    for m in range(coef.shape[1]):
        if bool((coef[:, m] != 0).any()):
            term = coef[:, m].view(-1, *[1] * (A.ndim - 1)) * ctx.grad(m)
            Gf = term if Gf is None else Gf + term
    return gradcam_terms(A, Gf).sum(1)


finercam.context = True


def shapleycam(A, G, ctx):
    """Shapley-CAM (Cai 2025; ``shapley_cam.py``): Σ_k w_k A_k with w_k = mean_x(G_k − ½ (H·A)_k),
    H = ∂²y_c/∂A² (a Hessian-vector product from the same pass; zero when y_c is linear in A, then
    this is Grad-CAM). Signed."""
    w = (G - 0.5 * ctx.hvp()).flatten(2).mean(2)
    return (_spatial_shape(w, A) * A).sum(1)


shapleycam.context = True
shapleycam.needs_hvp = True
