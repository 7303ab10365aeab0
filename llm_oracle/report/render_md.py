"""report.md and the headline table printed on the terminal."""

from __future__ import annotations

from llm_oracle.report.build import Report
from llm_oracle.report.stats import GroupRow, VetoValue

LABELS = {
    "oracle": "oracle (replayed)",
    "identity": "oracle as a variant table (check)",
    "prefilter": "pre-filter alone (every candidate)",
    "inverted": "oracle inverted",
}


def _ci(v: VetoValue) -> str:
    r = v.r_per_100
    return f"{r.value:+.2f} ({r.low:+.2f}..{r.high:+.2f})"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.0f}%"


def headline(report: Report) -> str:
    cur = report.stake_currency
    lines = [
        f"{'variant':<36}{'trades':>7}{'profit ' + cur:>15}{'profit %':>10}{'win %':>7}"
        f"{'max DD %':>10}"
    ]
    for v in report.variants:
        if v.kind == "placebo":
            continue
        m = v.metrics
        lines.append(
            f"{LABELS.get(v.name, v.name):<36}{m.trades:>7}{m.profit:>15.2f}{m.profit_pct:>10.2f}"
            f"{m.win_rate * 100:>7.1f}{m.max_drawdown_pct:>10.2f}"
        )
    band = report.placebo_profit
    if band.seeds:
        lines.append(
            f"{f'placebo, {band.seeds} seeds (p5 / p50 / p95)':<36}{'':>7}"
            f"{f'{band.p5:.0f} / {band.p50:.0f} / {band.p95:.0f}':>15}"
        )
        lines.append(f"oracle profit beats {band.oracle_percentile:.0f}% of the placebo backtests")
    return "\n".join(lines)


def _groups(title: str, rows: list[GroupRow]) -> list[str]:
    out = [
        f"### {title}",
        "",
        "| group | candidates | vetoed | vetoed that would have lost "
        "| veto value, R per 100 (95% CI) | placebo p95 | confirmed: confidence / win rate |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        v = row.veto
        out.append(
            f"| {row.group} | {v.candidates} | {v.vetoed} | {_pct(v.vetoed_losers_share)} | "
            f"{_ci(v)} | {row.placebo_p95:+.2f} | "
            + ("-" if row.mean_confidence is None else f"{row.mean_confidence:.2f}")
            + f" / {_pct(row.confirmed_win_rate)} |"
        )
    return [*out, ""]


def render_md(report: Report) -> str:
    cur = report.stake_currency
    veto, cost, memo = report.veto, report.cost, report.memorisation
    lines = [
        f"# Is the oracle worth its cost? Report `{report.name}`",
        "",
        f"**Verdict:** {report.verdict}",
        "",
        f"Decisions of `{report.source_backend}/{report.source_model}`, "
        f"{report.start:%Y-%m-%d %H:%M} .. {report.end:%Y-%m-%d %H:%M} UTC, "
        f"{report.timeframe}, {len(report.pairs)} pairs ({', '.join(report.pairs)}). Wallet "
        f"{report.wallet:.0f} {cur}, risk per trade {report.risk_per_trade * 100:g}% "
        f"(1 R = {report.risk_unit:.2f} {cur}), the oracle acts from "
        f"confidence {report.min_confidence:g}. Created {report.created:%Y-%m-%d %H:%M} UTC.",
        "",
    ]
    if report.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in report.warnings] + [""]
    lines += [
        "## Variants (real Freqtrade backtests, same data and money rules)",
        "",
        "```",
        headline(report),
        "```",
        "",
        f"Oracle replay (miss policy `{report.settings.get('on_miss', '?')}`; a report never "
        f"pays for a call): {report.misses['entries']} entry and "
        f"{report.misses['exit_reviews']} exit-review misses, "
        f"{report.misses['recorded_now']} candidate decisions recorded on the way (free local "
        f"source only), {report.misses['unanswered_candidates']} candidates without a recorded "
        f"decision (answered hold), {report.misses['unanswerable']} unanswerable.",
    ]
    if report.identity_matches_oracle is not None:
        same = "yes" if report.identity_matches_oracle else "NO"
        lines.append(
            f"The recorded decisions served as a variant table reproduce the replay: {same}."
        )
    lines += [
        "",
        "Placebo: the oracle's decisions shuffled among the candidates of the same side (same "
        "number of confirmations, stops and confidences; only which candidates get them is "
        f"random), {report.placebo_profit.seeds} backtests. Exit reviews of variant trades that "
        "the source never answered are answered by the variant's review policy.",
        "",
        "## Veto ledger",
        "",
        f"Each of the {veto.candidates} candidates valued as the trade it would have been under "
        "the money rules (entry at the next open, ATR stop, fee-multiple target, ATR trailing "
        f"stop, valued at the close after {report.settings['horizon_candles']} candles if still "
        "open; a stop fills before a target in the same candle). Evaluation only: computed after "
        "every request was built, never part of one.",
        "",
        f"- vetoed: {veto.vetoed} of {veto.candidates}; of those, would have lost: "
        f"{_pct(veto.vetoed_losers_share)}",
        f"- value of the vetoes: {_ci(veto)} R per 100 candidates; "
        f"{veto.usdt.value:+.2f} {cur} over the range (95% CI {veto.usdt.low:+.2f}.."
        f"{veto.usdt.high:+.2f}; bootstrap, {report.settings['bootstrap_samples']} resamples)",
        f"- placebo vetoes ({report.placebo_veto.seeds} seeds): p5 {report.placebo_veto.p5:+.2f}, "
        f"p50 {report.placebo_veto.p50:+.2f}, p95 {report.placebo_veto.p95:+.2f}; the oracle "
        f"beats {report.placebo_veto.oracle_percentile:.1f}% of them",
        "- ledger exits: " + ", ".join(f"{k} {v}" for k, v in sorted(report.ledger_exits.items())),
        "",
        "### Calibration (confirmed candidates: stated confidence vs realised win rate)",
        "",
        "| confidence | n | mean confidence | win rate |",
        "|---|---:|---:|---:|",
    ]
    for b in report.calibration.bins:
        mean = "-" if b.mean_confidence is None else f"{b.mean_confidence:.2f}"
        lines.append(f"| {b.low:.1f}..{b.high:.1f} | {b.n} | {mean} | {_pct(b.win_rate)} |")
    cal = report.calibration
    brier = "-" if cal.brier is None else f"{cal.brier:.3f}"
    lines += [
        "",
        f"Brier score {brier}; vetoed candidates that would have won: {_pct(cal.holds_win_rate)} "
        f"of {cal.holds}.",
        "",
        *_groups("By side", report.by_side),
        *_groups("By pair", report.by_pair),
        *_groups("By week", report.by_week),
        "## Cost",
        "",
        f"- API bill of the decisions used: ${cost.bill.usd:.4f} ({cost.bill.requests} requests, "
        f"{cost.bill.rows} journal rows, {cost.bill.decisions} decisions)",
        f"- oracle profit net of the bill: {cost.oracle_profit_net:+.2f} {cur}",
        f"- value added over the pre-filter alone, net of the bill: {cost.value_added_net:+.2f} "
        f"{cur}",
        "- per decision: "
        + ("-" if cost.usd_per_decision is None else f"${cost.usd_per_decision:.5f}")
        + "; per oracle trade: "
        + ("-" if cost.usd_per_trade is None else f"${cost.usd_per_trade:.5f}"),
        f"- break-even: each candidate's decision must add {cost.break_even_r_per_100:.4f} R per "
        "100 candidates to pay for the calls (1 USD = 1 USDT assumed)",
        "",
        "## Memorisation audit",
        "",
    ]
    if not memo.language_model:
        lines.append(
            f"`{memo.model}` is a local policy, not a language model: nothing to remember."
        )
    elif memo.cutoff is None:
        lines.append(f"No knowledge cutoff configured for `{memo.model}`.")
    else:
        lines.append(f"`{memo.model}` knowledge cutoff {memo.cutoff} (source: {memo.source}).")
        for label, part in (("before/at cutoff", memo.before), ("after cutoff", memo.after)):
            text = "no candidates" if part is None else f"{part.candidates} candidates, {_ci(part)}"
            lines.append(f"- {label}: {text}")
    if memo.warning:
        lines.append(f"\n**Warning:** {memo.warning}")
    lines += [
        "",
        "## Stability (weekly walk-forward windows)",
        "",
        "| week from | "
        + " | ".join(f"{LABELS.get(k, k)} {cur}" for k in report.weeks[0].profit)
        + " | placebo p50 | veto R/100 (95% CI) | placebo p95 | above |"
        if report.weeks
        else "",
        "|---|" + "---:|" * (len(report.weeks[0].profit) + 4) if report.weeks else "",
    ]
    for w in report.weeks:
        p50 = "-" if w.placebo_profit_p50 is None else f"{w.placebo_profit_p50:+.2f}"
        lines.append(
            f"| {w.week} | "
            + " | ".join(f"{x:+.2f}" for x in w.profit.values())
            + f" | {p50} | {_ci(w.veto)} | {w.placebo_p95:+.2f} | "
            + ("yes |" if w.above_placebo else "no |")
        )
    if report.without_best_week is not None:
        lines += [
            "",
            f"Veto value without the best week: {report.without_best_week:+.2f} R per 100.",
        ]
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items())
    lines += ["", f"Timing: {timing}.", ""]
    return "\n".join(lines)
