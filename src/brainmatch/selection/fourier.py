"""The non-linear candidate of the default model: a ridge on random Fourier features.

A Gaussian (RBF) kernel ``exp(-||z - z'||^2 / (2 p))`` on the ``p`` standardised features
is approximated by ``D`` random Fourier features (Rahimi & Recht 2007)::

    f_e(z) = cos(b_e + z @ w_e),   w_e ~ N(0, I / p),   b_e ~ U(0, 2 pi)

so that ``2 / D * sum_e f_e(z) f_e(z')`` tends to the kernel.  The features are
standardised on the training rows and given to the interaction (or per-arm) ridge of
:class:`~brainmatch.selection.pipeline.ArmModels`, so the candidate keeps everything the
linear ridge has: every target column (the outcome and each permuted one) solved by one
factorisation, exact leave-one-out predictions under every arm (what the default's
treatment-effect criterion compares), and a model file without patient data (the map
``(w, b)`` is random, not learned; :func:`~brainmatch.selection.trees.export_fourier`
stores it as cosine components).  The bandwidth ``p`` is the median heuristic's order
for standardised features (``E ||z - z'||^2 = 2 p``).

The map depends only on ``p`` and :data:`SEED`, so every fold, permutation and bootstrap
refit of one trial uses the same features.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from brainmatch.selection.pipeline import ArmModels
from brainmatch.selection.trees import Components, export_fourier

#: Number of random Fourier features.
N_FEATURES = 500
#: Squared bandwidth of the kernel in units of the number of features ``p``.
BANDWIDTH = 1.0
#: Seed of the random map (fixed: it is part of the model's definition, not of the data).
SEED = 20261202


def fourier_map(p: int, n_features: int = N_FEATURES) -> tuple[NDArray[np.float64], ...]:
    """The random map ``(w (p, D), b (D,))`` of an RBF kernel of bandwidth^2 ``p``."""
    rng = np.random.default_rng([SEED, p, n_features])
    w = rng.standard_normal((p, n_features)) / np.sqrt(BANDWIDTH * p)
    b = rng.uniform(0.0, 2.0 * np.pi, n_features)
    return w, b


class FourierArmModels:
    """:class:`~brainmatch.selection.pipeline.ArmModels` on random Fourier features.

    Parameters
    ----------
    model : {"interaction", "per-arm"}
    n_features : int
        ``D``, the number of random Fourier features.

    Attributes
    ----------
    ridge_ : ArmModels
        The ridge on the standardised Fourier features.
    mean_, sd_ : ndarray (D,)
        Training mean and SD of the Fourier features.
    """

    def __init__(self, model: str = "interaction", n_features: int = N_FEATURES) -> None:
        self.model = model
        self.n_features = n_features

    def _features(self, Z: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(np.cos(Z @ self.w_ + self.b_[None, :]))

    def fit(
        self,
        Z: NDArray[np.float64],
        C: NDArray[np.float64],
        t: NDArray[np.intp],
        k: int,
        Y: NDArray[np.float64],
    ) -> FourierArmModels:
        """Fit every column of ``Y`` (``(n, m)``) on the Fourier features of ``Z``."""
        self.p_ = Z.shape[1]
        self.w_, self.b_ = fourier_map(self.p_, self.n_features)
        F = self._features(Z)
        self.mean_ = F.mean(axis=0)
        sd = F.std(axis=0)
        self.sd_ = np.where(sd > 1e-8, sd, 1.0)
        self.ridge_ = ArmModels(self.model).fit((F - self.mean_) / self.sd_, C, t, k, Y)
        return self

    def transform(self, Z: NDArray[np.float64]) -> NDArray[np.float64]:
        """Standardised Fourier features of ``Z`` (training mean and SD)."""
        return np.asarray((self._features(Z) - self.mean_) / self.sd_)

    def predict(self, Z: NDArray[np.float64], C: NDArray[np.float64]) -> NDArray[np.float64]:
        """Predicted outcome ``(n_test, k, n_columns)`` under every arm."""
        return self.ridge_.predict(self.transform(Z), C)

    def loo_predict(self, Y: NDArray[np.float64]) -> NDArray[np.float64]:
        """Exact leave-one-out predictions under every arm (:meth:`ArmModels.loo_predict
        <brainmatch.selection.pipeline.ArmModels.loo_predict>`).  The map is not learned;
        the features' standardisation is kept from all training rows, as the linear ridge
        keeps the fold's standardisation of ``Z`` (its centring is absorbed by the
        unpenalised arm intercepts)."""
        return self.ridge_.loo_predict(Y)

    def loo_sse(self) -> NDArray[np.float64]:
        """Exact leave-one-out squared error per column (:meth:`ArmModels.loo_sse`)."""
        return self.ridge_.loo_sse()

    def penalties(self) -> list[float]:
        return self.ridge_.penalties()

    def export(self, column: int = 0) -> dict[str, Any]:
        """One column's model as a linear part (zero on the features) plus cosine components.

        ``pred_a = intercept_a + C @ cov_coef_a + sum_e weight[a, e] cos(b_e + Z @ w_e)``:
        the standardisation of the features is folded into ``weight`` and ``intercept``.
        """
        lin = self.ridge_.primal(column)
        weight = lin["coef"] / self.sd_[None, :]
        intercept = lin["intercept"] - weight @ self.mean_
        k = weight.shape[0]
        q = lin["cov_coef"].shape[1]
        comps: Components = export_fourier(self.w_, self.b_, self.p_ + q)
        return {
            "coef": np.zeros((k, self.p_)),
            "intercept": intercept,
            "cov_coef": lin["cov_coef"],
            "components": comps,
            "weight": weight,
        }
