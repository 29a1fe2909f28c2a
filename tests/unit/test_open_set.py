"""The vMF density and its normaliser, per-class concentrations, the calibrated posterior, the unknown threshold and
the open-set measures."""

import math

import mpmath
import pytest
import torch
import torch.nn.functional as F

from pml_vmf.class_means import estimate_concentration
from pml_vmf.evaluation.open_set_metrics import auroc, expected_calibration_error, fpr_at_tpr, negative_log_likelihood
from pml_vmf.open_set import VMFClassModel, class_concentrations, fit_temperature, threshold_at_tpr
from pml_vmf.vmf_density import log_bessel_iv, log_vmf_normaliser

mpmath.mp.dps = 40


@pytest.mark.parametrize("order", [0.0, 0.5, 3.0, 15.0, 63.0, 255.0, 1023.0])
def test_log_bessel_matches_mpmath_where_float64_over_and_underflows(order):
    xs = torch.tensor([1e-3, 0.1, 1.0, 8.0, 50.0, 300.0, 1e3, 1e4], dtype=torch.float64)
    expected = torch.tensor([float(mpmath.log(mpmath.besseli(order, x))) for x in xs.tolist()], dtype=torch.float64)
    torch.testing.assert_close(log_bessel_iv(order, xs), expected, rtol=1e-12, atol=1e-11)


def test_the_normaliser_integrates_the_density_to_one_and_tends_to_the_uniform():
    # On S^2 (dim 3) the normaliser is kappa / (4 pi sinh kappa); at kappa -> 0, 1 / (area of the sphere).
    for kappa in (0.01, 1.0, 30.0, 500.0):
        expected = math.log(kappa) - math.log(4 * math.pi) - (kappa + math.log1p(-math.exp(-2 * kappa)) - math.log(2))
        assert log_vmf_normaliser(torch.tensor(kappa), 3).item() == pytest.approx(expected, rel=1e-10)
    area_128 = math.log(2) + 64 * math.log(math.pi) - math.lgamma(64)
    assert log_vmf_normaliser(torch.tensor(0.0), 128).item() == pytest.approx(-area_128)
    assert log_vmf_normaliser(torch.tensor(1e-8), 128).item() == pytest.approx(-area_128, rel=1e-9)
    assert torch.isfinite(log_vmf_normaliser(torch.tensor([1e-3, 1.0, 1e2, 1e4, 1e6]), 512)).all()


def _vmf_samples(mean: torch.Tensor, kappa: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """Wood's (1994) rejection sampler, enough for the tests."""
    d = mean.numel()
    b = (-2 * kappa + math.sqrt(4 * kappa**2 + (d - 1) ** 2)) / (d - 1)
    x0, c = (1 - b) / (1 + b), kappa * (1 - b) / (1 + b) + (d - 1) * math.log(1 - ((1 - b) / (1 + b)) ** 2)
    beta = torch.distributions.Beta((d - 1) / 2, (d - 1) / 2)
    ws = []
    while len(ws) < n:
        z = beta.sample().item()
        w = (1 - (1 + b) * z) / (1 - (1 - b) * z)
        if kappa * w + (d - 1) * math.log(1 - x0 * w) - c >= math.log(torch.rand(1, generator=generator).item()):
            ws.append(w)
    w = torch.tensor(ws, dtype=torch.float64)[:, None]
    v = torch.randn(n, d, generator=generator, dtype=torch.float64)
    v = F.normalize(v - (v @ mean.double())[:, None] * mean.double(), dim=1)
    return w * mean.double() + (1 - w**2).sqrt() * v


def test_per_class_concentrations_recover_the_true_kappas_and_correct_the_few_sample_bias():
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    means = F.normalize(torch.randn(3, 32, generator=generator, dtype=torch.float64), dim=1)
    true_kappas = [20.0, 80.0, 300.0]
    lengths, counts = [], []
    for mean, kappa in zip(means, true_kappas):
        z = _vmf_samples(mean, kappa, 2000, generator)
        lengths.append(z.sum(0).norm() / len(z))
        counts.append(len(z))
    estimated = class_concentrations(torch.stack(lengths), torch.tensor(counts), 32)
    torch.testing.assert_close(estimated, torch.tensor(true_kappas, dtype=torch.float64), rtol=0.1, atol=0)
    # Four images a class (emoji): the raw length of random directions looks concentrated, the corrected one not.
    z = F.normalize(torch.randn(4, 128, generator=generator, dtype=torch.float64), dim=1)
    raw_length = z.sum(0).norm() / 4
    assert raw_length > 0.4
    corrected = class_concentrations(raw_length[None], torch.tensor([4]), 128)
    assert corrected < 0.5 * estimate_concentration(raw_length, 128)
    # A class of one image has no spread to measure: it gets the pooled concentration of the others.
    kappas = class_concentrations(torch.tensor([1.0, 0.9, 0.9]), torch.tensor([1, 1000, 1000]), 128)
    assert kappas[0].item() == pytest.approx(kappas[1].item()) and kappas[1] == kappas[2]
    assert torch.isfinite(class_concentrations(torch.tensor([1.0, math.nan]), torch.tensor([5, 0]), 8)).all()


def test_the_posterior_with_a_shared_kappa_is_vmf_losss_softmax():
    from pml_vmf import VMFLoss

    torch.manual_seed(1)
    loss = VMFLoss(6, 16, kappa=12.0)
    loss.means.copy_(F.normalize(torch.randn(6, 16), dim=1))
    loss.means[4] = 0  # a class without a mean
    model = VMFClassModel.from_statistics(loss.means, torch.zeros(6), torch.zeros(6), shared_kappa=12.0)
    z = torch.randn(10, 16)
    expected = torch.log_softmax(loss.get_logits(z).double(), dim=1)
    torch.testing.assert_close(model.log_posterior(z), expected, rtol=1e-6, atol=1e-6)
    labels, probabilities = model.predict(z)
    assert torch.equal(labels, loss.predict(z)) and (labels != 4).all()
    assert torch.allclose(probabilities, expected.max(dim=1).values.exp())


def test_per_class_kappas_score_a_query_by_its_classs_own_spread():
    means = torch.eye(4, 8, dtype=torch.float64)
    model = VMFClassModel(means, torch.tensor([400.0, 4.0, 50.0, 50.0], dtype=torch.float64))
    # At 60 degrees from both class 0 (tight) and class 1 (loose), the loose class explains the query far better.
    z = F.normalize(torch.tensor([[0.5, 0.5, 0, 0, 0.7, 0, 0, 0]], dtype=torch.float64), dim=1)
    log_likelihoods = model.log_likelihoods(z)[0]
    assert log_likelihoods[1] > log_likelihoods[0]
    scores = model.scores(torch.cat([means[:1], z]))
    assert set(scores) == {"vmf_log_likelihood", "vmf_max_posterior", "max_cosine"}
    for name in ("vmf_log_likelihood", "max_cosine"):  # a class's own mean looks more known than a query between
        assert scores[name][0] > scores[name][1]
    with pytest.raises(ValueError, match="finite and positive"):
        VMFClassModel(means, torch.tensor([1.0, 0.0, 1.0, 1.0]))


def test_calibration_fits_the_temperature_that_generated_the_labels():
    generator = torch.Generator().manual_seed(2)
    logits = 3.0 * torch.randn(4000, 10, generator=generator, dtype=torch.float64)
    labels = torch.multinomial(torch.softmax(logits / 2.5, dim=1), 1, generator=generator)[:, 0]
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.08)
    means = torch.eye(10, 16, dtype=torch.float64)
    model = VMFClassModel(means, torch.full((10,), 30.0, dtype=torch.float64))
    z = F.normalize(means[labels] + 0.9 * torch.randn(4000, 16, generator=generator, dtype=torch.float64), dim=1)
    before = negative_log_likelihood(model.log_posterior(z), labels)
    temperature = model.calibrate(z, labels)
    assert temperature == model.temperature and negative_log_likelihood(model.log_posterior(z), labels) < before
    with pytest.raises(ValueError, match="known class"):
        model.calibrate(z[:2], torch.tensor([0, 12]))


def test_the_threshold_accepts_the_asked_share_of_known_queries():
    known = torch.arange(100, dtype=torch.float64)
    threshold = threshold_at_tpr(known, 0.95)
    assert (known >= threshold).double().mean() == pytest.approx(0.95)
    with pytest.raises(ValueError, match="share of known-class queries"):
        threshold_at_tpr(known, 0.0)


def test_open_set_measures_agree_with_their_definitions():
    known = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    unknown = torch.tensor([0.75, 0.35, 0.0, 0.0])
    pairs = [(k > u) + 0.5 * (k == u) for k in known.tolist() for u in unknown.tolist()]
    assert auroc(known, unknown) == pytest.approx(sum(pairs) / len(pairs))
    # 95% of 10 known: the threshold must accept all ten (>= 0.05): unknown 0.75 and 0.35 pass, 2 of 4.
    assert fpr_at_tpr(known, unknown, 0.95) == pytest.approx(0.5)
    assert fpr_at_tpr(known, unknown, 0.5) == pytest.approx(0.25)  # threshold 0.5: only 0.75 passes
    probabilities = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 1])
    # bins of width 1/15: 0.9 alone (right), 0.6 alone (wrong), 0.7 alone (right), 0.8 alone (right)
    assert expected_calibration_error(probabilities, labels) == pytest.approx((0.1 + 0.6 + 0.3 + 0.2) / 4)
    assert negative_log_likelihood(probabilities.log(), labels) == pytest.approx(
        -(math.log(0.9) + math.log(0.4) + math.log(0.7) + math.log(0.8)) / 4
    )
    with pytest.raises(ValueError, match="finite"):
        auroc(known, torch.tensor([math.nan]))
