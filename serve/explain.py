"""`liaotian explain MODEL_DIR --text ...`: Integrated Gradients without a server.

The terminal view colours each token's background from white to red by |score| / max |score| (ANSI
24-bit colour): the more important, the redder; a token that pulled against the prediction is
underlined. `--html FILE` writes the same heat map the web page shows (same CSS, same colour rule as
`static/app.js`). The rendering functions are pure: tokens + scores in, text out.
"""
from __future__ import annotations

import html
import json
import sys
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"


def heat_rgb(score: float, scale: float) -> tuple[int, int, int]:
    """White -> red with |score| / scale (the rule `heat()` in static/app.js applies)."""
    w = min(1.0, abs(score) / scale) if scale > 0 else 0.0
    gb = round(255 * (1 - 0.85 * w))
    return 255, gb, gb


def _scale(scores) -> float:
    return max((abs(float(s)) for s in scores), default=0.0)


def _is_special(tok: str) -> bool:
    return len(tok) > 2 and tok.startswith("[") and tok.endswith("]")


def _coloured(tokens: list[str], scores: list[float]):
    """(token, score, (r, g, b)) for each token: the one colour scale both views share."""
    if len(tokens) != len(scores):
        raise ValueError(f"{len(tokens)} tokens but {len(scores)} scores")
    scale = _scale(scores)
    return [(tok, float(s), heat_rgb(float(s), scale)) for tok, s in zip(tokens, scores)]


def render_ansi(tokens: list[str], scores: list[float], reply_tokens: list[str] | None = None) -> str:
    """One line of tokens on coloured backgrounds, black text; negative scores underlined."""
    parts = []
    for tok, s, (r, g, b) in _coloured(tokens, scores):
        underline = "\x1b[4m" if s < 0 else ""
        parts.append(f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m{underline}{tok}\x1b[0m")
    line = "".join(parts)
    if reply_tokens:
        line += "  → " + "".join(reply_tokens)
    return line


def _css() -> str:
    return (STATIC_DIR / "style.css").read_text(encoding="utf-8")


def heatmap_html(tokens: list[str], scores: list[float], reply_tokens: list[str] | None = None) -> str:
    """The `<div class="heatmap">` fragment, the same markup `renderHeatmap` builds in the page."""
    spans = []
    for tok, s, (r, g, b) in _coloured(tokens, scores):
        cls = "tok" + (" neg" if s < 0 else "") + (" special" if _is_special(tok) else "")
        spans.append(f'<span class="{cls}" style="background: rgb({r}, {g}, {b})" '
                     f'title="{html.escape(tok)}  {s:.4f}">{html.escape(tok)}</span>')
    if reply_tokens:
        spans.append('<span class="sep"></span><span class="reply" title="the reply being explained">→ '
                     + html.escape("".join(reply_tokens)) + "</span>")
    return '<div class="heatmap">' + "".join(spans) + "</div>"


def _meta_rows(result: dict) -> list[tuple[str, str]]:
    rows = []
    if result.get("label") is not None:
        name = result.get("label_name") or result["label"]
        rows.append(("prediction", f"{name} (p = {float(result['probability']):.3f})"))
    rows += [("F(x)", f"{result['f_x']:.4f}"), ("F(baseline)", f"{result['f_baseline']:.4f}"),
             ("Σ scores", f"{sum(result['scores']):.4f}"), ("delta", f"{result['delta']:.2e}"),
             ("settings", f"{result['method']}, {result['steps']} steps, {result['baseline']} baseline")]
    return rows


def render_html(result: dict, title: str = "liaotian explain") -> str:
    """A standalone page (no external resources) for one attribution result (the API's JSON)."""
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in _meta_rows(result))
    return (
        "<!doctype html>\n<html lang=\"zh\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_css()}</style></head><body><main>"
        "<section id=\"explain-panel\"><h2>Explain</h2>"
        "<p class=\"hint\">Integrated Gradients: the more a token drove the prediction, the redder it is. "
        "A blue underline marks a token that pulled against it.</p>"
        + heatmap_html(result["tokens"], result["scores"], result.get("reply_tokens"))
        + f"<div class=\"meta\"><table>{rows}</table></div></section></main></body></html>\n"
    )


def render_plain(tokens: list[str], scores: list[float], reply_tokens: list[str] | None = None) -> str:
    """The same line without escape codes (output that is not a terminal: a log, a file, a pipe):
    each token followed by its score."""
    line = " ".join(f"{tok}({s:+.3f})" for tok, s, _ in _coloured(tokens, scores))
    if reply_tokens:
        line += "  → " + "".join(reply_tokens)
    return line


def render_terminal(result: dict, colour: bool = True) -> str:
    render = render_ansi if colour else render_plain
    lines = [render(result["tokens"], result["scores"], result.get("reply_tokens"))]
    lines += [f"  {k:<12} {v}" for k, v in _meta_rows(result)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def _steps(text: str):
    return text if text == "auto" else int(text)


def add_cli(parser) -> None:
    from liaotian.cli import add_common_arguments

    parser.add_argument("model_dir", metavar="MODEL_DIR",
                        help="an exported classifier (explains --text) or dialogue model (explains --reply)")
    parser.add_argument("--text", help="the sentence to classify and explain")
    parser.add_argument("--context", action="append", default=[], metavar="UTTERANCE",
                        help="a dialogue turn before the reply (repeatable, oldest first; dialogue models)")
    parser.add_argument("--reply", help="the reply whose log-probability is explained (dialogue models)")
    parser.add_argument("--target", type=int, help="the class to explain (default: the predicted one)")
    parser.add_argument("--steps", type=_steps, help="integration steps, or 'auto' (default: serve.ig_steps, "
                        "'auto' = add nodes until the completeness delta is below 1 %% of |F(x) - F(baseline)|)")
    parser.add_argument("--baseline", choices=["pad", "zeros"], default="pad")
    parser.add_argument("--method", default=None, help="default: gausslegendre for fixed steps, adaptive_trapezoid for auto",
                        choices=["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle",
                                 "adaptive_trapezoid", "clenshaw_curtis"])
    parser.add_argument("--html", metavar="FILE", help="also write the heat map as a standalone HTML page")
    parser.add_argument("--json", action="store_true", help="print the attribution as JSON instead of colours")
    add_common_arguments(parser)
    parser.set_defaults(run=cli_main)


def cli_main(args) -> int:
    from liaotian.cli import load_config_from_args
    from liaotian.serve.api import AttributionRequest, RequestError
    from liaotian.serve.engine import Explainer, read_model_type

    cfg = load_config_from_args(args)
    model_dir = Path(args.model_dir)
    if not (model_dir / "config.json").is_file():
        print(f"liaotian explain: {model_dir} is not a model directory (no config.json)", file=sys.stderr)
        return 2
    is_chat = read_model_type(model_dir) == "dialog_lm"
    body = {"baseline": args.baseline, "method": args.method, "steps": args.steps}
    if is_chat:
        if not args.reply or not args.context or args.text:
            print("liaotian explain: a dialogue model explains --reply after --context turns (not --text)", file=sys.stderr)
            return 2
        turns = args.context
        roles = ["user" if (len(turns) - i) % 2 == 1 else "assistant" for i in range(len(turns))]
        body.update(messages=[{"role": r, "content": t} for r, t in zip(roles, turns)], reply=args.reply)
    else:
        if not args.text or args.reply:
            print("liaotian explain: a classifier explains --text", file=sys.stderr)
            return 2
        body.update(text=args.text, target=args.target)
    try:
        req = AttributionRequest.model_validate({k: v for k, v in body.items() if v is not None},
                                                context={"cfg": cfg.serve})
        explainer = Explainer(classifier_dir=None if is_chat else model_dir, chat_dir=model_dir if is_chat else None,
                              default_steps=cfg.serve.ig_steps)
        result = explainer.explain([explainer.prepare(req)])[0]
    except (ValueError, RequestError) as e:
        print(f"liaotian explain: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, ensure_ascii=False) if args.json else render_terminal(result, colour=sys.stdout.isatty()))
    if args.html:
        Path(args.html).parent.mkdir(parents=True, exist_ok=True)
        Path(args.html).write_text(render_html(result), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    return 0
