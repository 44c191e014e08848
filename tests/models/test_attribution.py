"""Integrated Gradients: quadrature rules, completeness, agreement with captum, adaptive mode, DialogLM replies."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from liaotian.models.attribution import integrated_gradients, quadrature
from liaotian.models.dialog_lm import DialogLM, DialogLMConfig

try:
    from captum.attr import LayerIntegratedGradients
except ImportError:  # the agreement tests need captum; everything else does not
    LayerIntegratedGradients = None
needs_captum = pytest.mark.skipif(LayerIntegratedGradients is None, reason="captum is not importable")

CTX, REPLY, SEG = [2, 10, 11, 12, 3, 20, 21, 22, 3], [30, 31, 32, 3], [0, 0, 0, 0, 0, 1, 1, 1, 1]


def make_classifier(encoder="masked_lm", noise=0.05):
    from liaotian.models.classifier import Classifier, ClassifierConfig

    torch.manual_seed(0)
    enc = dict(vocab_size=120, max_len=32, n_layer=2, n_head=2, d_model=48)
    model = Classifier(ClassifierConfig(encoder=encoder, encoder_config=enc, num_classes=3, dropout=0.1))
    with torch.no_grad():  # a less trivial function than the initialisation
        for p in model.parameters():
            p.add_(noise * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def classifier():
    return make_classifier()


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    return DialogLM(DialogLMConfig(vocab_size=120, n_layer=2, n_head=2, d_model=48, max_len=32, dropout=0.0)).eval()


def sentence(T=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.tensor([2]), torch.randint(7, 120, (T - 2,), generator=g), torch.tensor([3])])


@pytest.mark.parametrize("method,n,degree", [("gausslegendre", 5, 9), ("clenshaw_curtis", 9, 9), ("riemann_trapezoid", 11, 1), ("riemann_middle", 8, 1)])
def test_rules_integrate_polynomials_exactly(method, n, degree):
    _, alphas, weights = quadrature(method, n)
    for d in range(degree + 1):
        assert float((weights * alphas**d).sum()) == pytest.approx(1 / (d + 1), abs=1e-12)
    assert abs(float((weights * alphas ** (degree + 1)).sum()) - 1 / (degree + 2)) > 1e-12


def test_nested_rules_share_nodes():
    for method in ("clenshaw_curtis", "riemann_trapezoid"):
        coarse, _, _ = quadrature(method, 9)
        fine, _, _ = quadrature(method, 17)
        assert set(coarse) <= set(fine)
    with pytest.raises(ValueError, match="unknown IG method"):
        quadrature("simpson", 5)


@pytest.mark.parametrize("encoder,output", [("masked_lm", "logit"), ("masked_lm", "prob"), ("fast_mlm", "logit")])
def test_classifier_completeness_at_50_steps(encoder, output):
    classifier = make_classifier(encoder)
    ids = sentence()
    with torch.no_grad():
        logits = classifier(ids[None]).logits[0]
    target = int(logits.argmax())
    a = integrated_gradients(classifier, ids, target, steps=50, output=output, return_attributions=True)
    f_x = float(logits[target] if output == "logit" else torch.softmax(logits, -1)[target])
    assert a.f_x == pytest.approx(f_x, rel=1e-5, abs=1e-6)
    assert abs(a.f_x - a.f_baseline) > 1e-3
    assert a.delta < 0.01 * abs(a.f_x - a.f_baseline)
    assert a.token_scores.shape == (20,) and a.attributions.shape == (20, 48)
    assert torch.allclose(a.attributions.sum(-1), a.token_scores, atol=1e-5)
    assert classifier.training is False


def test_zero_baseline_and_padding_positions_get_nothing(classifier):
    ids = torch.cat([sentence(12), torch.zeros(4, dtype=torch.long)])
    mask = (torch.arange(16) < 12).long()
    a = integrated_gradients(classifier, ids, 1, baseline="zeros", steps=32, attention_mask=mask)
    assert torch.all(a.token_scores[12:] == 0)
    assert a.token_scores[:12].abs().sum() > 0
    assert a.relative_delta < 0.01


@needs_captum
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle"])
def test_classifier_matches_captum_layer_ig(classifier, method):
    ids, target = sentence(), 2
    lig = LayerIntegratedGradients(lambda i: classifier(i).logits, classifier.token_embedding)
    theirs = lig.attribute(ids[None], baselines=torch.zeros_like(ids)[None], target=target, n_steps=50, method=method)[0]
    ours = integrated_gradients(classifier, ids, target, steps=50, method=method, return_attributions=True)
    assert (ours.attributions - theirs).abs().max() <= 1e-4 * theirs.abs().max()


@needs_captum
def test_reply_matches_captum_layer_ig(lm):
    ids = torch.tensor([CTX + REPLY])
    seg = torch.tensor([SEG + [0] * len(REPLY)])
    mask = torch.zeros_like(ids)
    mask[:, len(CTX):] = 1

    def log_p_reply(i):
        return -lm(i, segment_ids=seg.expand(i.shape[0], -1), loss_mask=mask.expand(i.shape[0], -1)).token_nll.sum(-1)

    baseline_ids = ids.clone()
    baseline_ids[:, : len(CTX)] = 0  # [PAD] on the context, the reply unchanged
    lig = LayerIntegratedGradients(log_p_reply, lm.token_embedding)
    theirs = lig.attribute(ids, baselines=baseline_ids, n_steps=50, method="gausslegendre")[0]
    ours = integrated_gradients(lm, CTX, REPLY, steps=50, segment_ids=SEG, return_attributions=True)
    assert (ours.attributions - theirs).abs().max() <= 1e-4 * theirs.abs().max()


def test_reply_target_log_probability_and_scores(lm):
    a = integrated_gradients(lm, CTX, REPLY, steps=50, segment_ids=SEG)
    ids = torch.tensor([CTX + REPLY])
    seg = torch.tensor([SEG + [0] * len(REPLY)])  # the reply is the next speaker: segment 1 − last
    with torch.no_grad():
        logp = torch.log_softmax(lm(ids, segment_ids=seg).logits[0].float(), -1)
    expected = sum(float(logp[t - 1, ids[0, t]]) for t in range(len(CTX), ids.shape[1]))
    assert a.f_x == pytest.approx(expected, rel=1e-5)
    assert a.reply_start == len(CTX) and a.input_ids == CTX + REPLY and a.target == REPLY
    assert torch.all(a.token_scores[len(CTX):] == 0) and a.token_scores[: len(CTX)].abs().sum() > 0
    assert a.delta < 0.01 * abs(a.f_x - a.f_baseline)
    whole = integrated_gradients(lm, CTX, REPLY, steps=50, segment_ids=SEG, attribute_reply=True)
    assert whole.token_scores[len(CTX):].abs().sum() > 0 and whole.f_x == pytest.approx(a.f_x)


def reference(model, ids, target, **kw):
    """A converged reference: 256-node Gauss-Legendre (its change from 128 nodes is far below the tolerances here)."""
    return integrated_gradients(model, ids, target, steps=256, method="gausslegendre", **kw).token_scores.double()


def max_rel_error(scores, ref) -> float:
    return float((scores.double() - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("method", ["adaptive_trapezoid", "clenshaw_curtis", "riemann_trapezoid"])
def test_adaptive_meets_tolerance_against_a_converged_reference(lm, method):
    rough = make_classifier(noise=0.6)  # sharp enough that the coarsest rule is not enough
    ids = sentence(seed=3)
    ref = reference(rough, ids, 0)
    used = []
    for tol in (0.03, 0.01):
        a = integrated_gradients(rough, ids, 0, steps="auto", method=method, tolerance=tol, max_steps=1025)
        assert a.error_bound <= tol * float(a.token_scores.abs().max())
        assert max_rel_error(a.token_scores, ref) <= tol, (tol, a.steps)  # the bound holds on every token
        assert len(set(a.node_alphas)) == a.steps and a.node_alphas[0] == 0.0 and a.node_alphas[-1] == 1.0
        if method != "adaptive_trapezoid":
            assert a.steps in (9, 17, 33, 65, 129, 257, 513, 1025)
        used.append(a.steps)
    assert used[1] > used[0] > 9
    capped = integrated_gradients(rough, ids, 0, steps="auto", method=method, tolerance=0.0, max_steps=33)
    assert capped.steps == 33  # stops at the cap when the tolerance is out of reach
    r = integrated_gradients(lm, CTX, REPLY, steps="auto", segment_ids=SEG, method=method)
    assert max_rel_error(r.token_scores, reference(lm, CTX, REPLY, segment_ids=SEG)) <= 0.01


def test_the_stopping_bound_cannot_cancel():
    from liaotian.models.ig_adaptive import local_errors

    # F = (α - 1/2)^4 / 4, g = F' = (α - 1/2)^3: on nodes 0, 1/2, 1 the trapezoid errs by +1/64 and -1/64,
    # so the completeness delta is 0 while both halves are wrong.
    alphas = np.array([0.0, 0.5, 1.0])
    fs, g = (alphas - 0.5) ** 4 / 4, (alphas - 0.5) ** 3
    err = local_errors(alphas, fs, g[:, None])
    signed = np.diff(fs) - np.diff(alphas) * (g[:-1] + g[1:]) / 2
    assert abs(signed.sum()) < 1e-15 and err.sum() >= 0.999 * 2 / 64  # (less F's float32 rounding allowance)


def test_local_refinement_puts_nodes_where_the_error_is():
    rough = make_classifier(noise=0.6)
    a = integrated_gradients(rough, sentence(seed=3), 0, steps="auto", tolerance=0.03)
    gaps = np.diff(a.node_alphas)
    assert gaps.max() > 2 * gaps.min()  # non-uniform: refined locally


def test_adaptive_equals_fixed_rule_with_the_same_nodes(classifier):
    ids = sentence(seed=4)
    a = integrated_gradients(classifier, ids, 1, steps="auto", method="clenshaw_curtis", tolerance=1e-9, max_steps=33, return_attributions=True)
    b = integrated_gradients(classifier, ids, 1, steps=33, method="clenshaw_curtis", return_attributions=True)
    assert a.steps == 33 and torch.allclose(a.attributions, b.attributions, atol=1e-6)
    c = integrated_gradients(classifier, ids, 1, steps=33, method="clenshaw_curtis", internal_batch_size=4)
    assert torch.allclose(c.token_scores, b.token_scores, atol=1e-6)


def test_tokens_from_a_tokenizer(classifier):
    class Tok:
        def convert_ids_to_tokens(self, ids):
            return [f"<{i}>" for i in ids]

    a = integrated_gradients(classifier, [2, 9, 3], 0, steps=4, tokenizer=Tok())
    assert a.tokens == ["<2>", "<9>", "<3>"] and a.input_ids == [2, 9, 3]


def test_errors(classifier, lm):
    ids = sentence()
    with pytest.raises(ValueError, match="nested rule"):
        integrated_gradients(classifier, ids, 0, steps="auto", method="gausslegendre")
    with pytest.raises(ValueError, match="baseline must be"):
        integrated_gradients(classifier, ids, 0, baseline="blur")
    with pytest.raises(ValueError, match="steps must be"):
        integrated_gradients(classifier, ids, 0, steps="many")
    with pytest.raises(ValueError, match="does not index"):
        integrated_gradients(classifier, ids, 7, steps=4)
    with pytest.raises(ValueError, match="reply is empty"):
        integrated_gradients(lm, CTX, [], steps=4)
    with pytest.raises(ValueError, match="one sequence"):
        integrated_gradients(classifier, torch.zeros(2, 5, dtype=torch.long), 0)
    assert math.isfinite(integrated_gradients(classifier, ids, np.int64(0), steps=2, method="riemann_trapezoid").delta)
    assert np.isclose(quadrature("riemann_trapezoid", 2)[2].sum(), 1.0)


def test_refining_only_the_worst_interval_meets_tolerance_and_weights_are_the_trapezoid_on_its_nodes():
    rough = make_classifier(noise=0.6)
    ids = sentence(seed=3)
    worst = integrated_gradients(rough, ids, 0, steps="auto", tolerance=0.01, refine=1.0, baseline="zeros",
                                 return_attributions=True)
    broad = integrated_gradients(rough, ids, 0, steps="auto", tolerance=0.01, refine=0.25, baseline="zeros")
    for r in (worst, broad):
        assert r.error_bound <= 0.01 * float(r.token_scores.abs().max())
    assert worst.steps <= broad.steps
    # the weights depend only on where the nodes are: a trapezoid over them, evaluated independently
    alphas = torch.tensor(worst.node_alphas, dtype=torch.float64)
    w = torch.zeros_like(alphas)
    w[1:] += (alphas[1:] - alphas[:-1]) / 2
    w[:-1] += (alphas[1:] - alphas[:-1]) / 2
    row = ids.unsqueeze(0)
    x = rough.token_embedding(row)[0].detach()
    base = torch.zeros_like(x)
    grads = []
    for a in alphas.tolist():
        point = (base + a * (x - base)).unsqueeze(0).requires_grad_(True)
        out = rough(row, token_embeds=point).logits[0, 0]
        grads.append(torch.autograd.grad(out, point)[0][0].double())
    expected = sum(wi * g for wi, g in zip(w, grads)) * (x - base).double()
    assert torch.allclose(worst.attributions.double(), expected, atol=1e-4)
    with pytest.raises(ValueError, match="refine"):
        integrated_gradients(rough, ids, 0, steps="auto", refine=0.0)
