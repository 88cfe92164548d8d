"""`gridbus bench ...`: benchmarks (never timed unit tests)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import click

from bus.cli.common import Progress, fails_cleanly, table


@click.group("bench")
def bench():
    """Measure gridbus end to end beside a minimal baseline, in the same run."""


@bench.command("ingest")
@click.option("--reads", default="100000", show_default=True,
              help="Interval rows in the file; several sizes comma-separated (e.g. 100000,2000000).")
@click.option("--batch-size", default=1000, show_default=True)
@click.option("--concurrency", "-c", default=2, show_default=True, help="Worker (and baseline consumer) processes.")
@click.option("--no-baseline", is_flag=True, help="Run gridbus only.")
@click.option("--tracing", type=click.Choice(["on", "off", "both"]), default="on", show_default=True,
              help="both: gridbus with and without trace events, side by side.")
@click.option("--decoders", default="csv_readings", show_default=True,
              help="Comma-separated, run in this order: csv_readings (the shipped HES-A mapping) and/or "
                   "hes_a_csv (the Python decoder it replaced); repeat to alternate, e.g. "
                   "csv_readings,hes_a_csv,csv_readings,hes_a_csv.")
@click.option("--keep", is_flag=True, help="Keep the work folder (logs, archive, reports).")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON (with CPU by process) instead of tables.")
@fails_cleanly
def ingest(reads, batch_size, concurrency, no_baseline, tracing, decoders, keep, as_json):
    """File drop → MDMS has stored every read; beside csv.reader → pika → HTTP POST.

    Reports throughput, the gridbus/baseline ratio, peak memory and the CPU seconds
    per 1,000 rows each process spent (ingress, worker with its pool, recorder,
    RabbitMQ, the MDMS stand-in, the baseline's processes).  Needs a RabbitMQ node
    with the management plugin (`gridbus dev up`); runs in a throw-away virtual host of it."""
    from gridbus_dev.bench.ingest import DECODERS, bench_ingest

    chosen = tuple(d.strip() for d in decoders.split(",") if d.strip())
    if not chosen or set(chosen) - set(DECODERS):
        raise click.BadParameter(f"each of {', '.join(DECODERS)}", param_hint="--decoders")

    sizes = [int(x.replace("_", "")) for x in reads.split(",")]
    rows = []
    all_runs = []
    for n in sizes:
        work = Path(tempfile.mkdtemp(prefix=f"gridbus-bench-{n}-"))

        line = Progress()

        def progress(stored, expected):
            line.show(f"{stored:>12,} / {expected:,} readings stored")

        modes = {"on": (True,), "off": (False,), "both": (True, False)}[tracing]
        runs = bench_ingest(n, batch_size, concurrency, work, not no_baseline,
                            lambda m: click.echo(m, err=True), progress, modes, chosen)
        line.done()
        all_runs.extend(runs)
        base = runs[-1] if not no_baseline else None
        traced = [r for r in runs if "tracing on" in r.pipeline]
        untraced = [r for r in runs if "tracing off" in r.pipeline]
        for run in runs:
            ratio = f"{run.reads_per_s / base.reads_per_s:.2f}" if base and run is not base else ""
            rows.append([run.pipeline, f"{run.reads:,}", f"{run.readings:,}", f"{run.seconds:.1f}",
                         f"{run.reads_per_s:,.0f}", f"{run.readings / run.seconds:,.0f}", ratio,
                         f"{run.peak_rss_mb:.0f}" if run.peak_rss_mb else ""])
        by_decoder = {d: sorted(r.reads_per_s for r in runs if r.pipeline.endswith(f"[{d}]")) for d in chosen}
        if len(by_decoder) > 1 and all(by_decoder.values()):
            median = {d: v[len(v) // 2] if len(v) % 2 else sum(v[len(v) // 2 - 1:len(v) // 2 + 1]) / 2
                      for d, v in by_decoder.items()}
            ratio = median["csv_readings"] / median["hes_a_csv"]
            click.echo(f"csv_readings / hes_a_csv at {n:,} reads (medians): {ratio:.2f}", err=True)
            rows.append(["csv_readings / hes_a_csv", "", "", "", f"{ratio:.2f}", "", "", ""])
        if traced and untraced:
            cost = 1 - traced[0].reads_per_s / untraced[0].reads_per_s
            click.echo(f"tracing cost at {n:,} reads: {cost * 100:.1f} % of throughput", err=True)
            rows.append(["tracing cost", "", "", "", f"{cost * 100:.1f} %", "", "", ""])
        if not keep:
            import shutil
            shutil.rmtree(work, ignore_errors=True)
        else:
            click.echo(f"work folder kept: {work}", err=True)
    if as_json:
        import json
        click.echo(json.dumps({"runs": [r.summary() for r in all_runs]}, indent=2))
        return
    click.echo(table(rows, ["pipeline", "reads", "readings", "s", "reads/s", "readings/s",
                            "gridbus/baseline", "peak RSS MB"]))
    click.echo("\nCPU s per 1,000 rows, by process:")
    click.echo(cpu_table(all_runs))
    gridbus_runs = [r for r in all_runs if r.pipeline == "gridbus"]
    if len(gridbus_runs) > 1:
        small, large = gridbus_runs[0], gridbus_runs[-1]
        click.echo(f"worker peak RSS {large.reads:,} reads vs {small.reads:,}: "
                   f"{large.peak_rss_mb / small.peak_rss_mb:.2f}x")


def cpu_table(runs) -> str:
    """CPU seconds per 1,000 rows: a row per run, a column per process (blank: not in that run)."""
    names = list(dict.fromkeys(n for r in runs for n in r.cpu_s))
    rows = []
    for r in runs:
        per = r.cpu_s_per_1000_rows()
        rows.append([r.pipeline, f"{r.reads:,}", *(f"{per[n]:.4f}" if n in per else "" for n in names),
                     f"{sum(per.values()):.4f}"])
    return table(rows, ["pipeline", "reads", *names, "total"])


@bench.command("fairness")
@click.option("--rate-per-system", default=200.0, show_default=True, help="The gateway's rate limit per system.")
@click.option("--steady-rate", default=20.0, show_default=True, help="HES-B's pushes per second (its normal pace).")
@click.option("--flood-factor", default=5.0, show_default=True, help="HES-A pushes this many times its rate.")
@click.option("--seconds", default=10.0, show_default=True, help="Length of each phase.")
@click.option("--in-flight-per-system", default=8, show_default=True,
              help="The gateway's per-system share (0: none, to see the gateway without it).")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1, 20),
              help="Pairs of phases (alone, flood), alternating; the figure is the median of the pairs' ratios.")
@click.option("--json", "as_json", is_flag=True, help="Print the phases as JSON.")
@fails_cleanly
def fairness(rate_per_system, steady_rate, flood_factor, seconds, in_flight_per_system, rounds, as_json):
    """Issue 22: HES-B's push latency alone and while HES-A floods the gateway at 5x its rate.

    Reports HES-B's p50/p99 in both phases and their ratio (target: p99 within 2x), and what
    HES-A was answered (202 within its rate, 429 beyond).  Needs `gridbus dev up` (a RabbitMQ
    node with management); runs a gateway of its own in a throw-away virtual host."""
    import json
    import shutil

    from gridbus_dev.bench.fairness import bench_fairness

    work = Path(tempfile.mkdtemp(prefix="gridbus-bench-fairness-"))
    try:
        phases = bench_fairness(work, rate_per_system, steady_rate, flood_factor, seconds, in_flight_per_system,
                                lambda m: click.echo(m, err=True), rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios = sorted(f.percentile(0.99) / a.percentile(0.99) for a, f in zip(phases[::2], phases[1::2])
                    if a.percentile(0.99) and f.percentile(0.99))
    ratio = ratios[len(ratios) // 2] if ratios else None
    if as_json:
        click.echo(json.dumps({"phases": [{"name": p.name, "steady": {k: v for k, v in p.steady.items()
                                                                       if k != "latencies_ms"},
                                           "p50_ms": p.percentile(0.5), "p99_ms": p.percentile(0.99),
                                           "flood": p.flood and {k: v for k, v in p.flood.items()
                                                                 if k != "latencies_ms"}} for p in phases],
                               "p99_ratio_median": ratio, "p99_ratios": ratios}, indent=2))
        return
    rows = [[p.name, f"{sum(p.steady['statuses'].values()):,}", json.dumps(p.steady["statuses"]),
             f"{p.percentile(0.5):.1f}", f"{p.percentile(0.99):.1f}",
             json.dumps(p.flood["statuses"]) if p.flood else "", f"{p.flood['not_started']:,}" if p.flood else ""]
            for p in phases]
    click.echo(table(rows, ["phase", "HES-B pushes", "HES-B answers", "p50 ms", "p99 ms", "HES-A answers",
                            "HES-A not started"]))
    click.echo(f"HES-B p99 under the flood / alone, median of {len(ratios)} round(s): {ratio:.2f} "
               f"(each: {', '.join(f'{r:.2f}' for r in ratios)}; target: within 2)" if ratio else "no p99")


@bench.command("alarms")
@click.option("--count", default=50000, show_default=True, type=click.IntRange(100, 1_000_000),
              help="Alarms in the feeder-trip burst.")
@click.option("--via", type=click.Choice(["rest", "amqp", "both"]), default="both", show_default=True,
              help="How the HES sends: JSON arrays to the gateway, or one AMQP message per alarm.")
@click.option("--batch", default=1000, show_default=True, help="Alarms per POST (--via rest).")
@click.option("--per-message", default=1, show_default=True, type=click.IntRange(1, 10_000),
              help="Alarms per AMQP message (--via amqp, and the baseline): 1 = one message per alarm.")
@click.option("--concurrency", "-c", default=2, show_default=True, help="Worker processes.")
@click.option("--no-baseline", is_flag=True, help="Run gridbus only.")
@click.option("--keep", is_flag=True, help="Keep the work folder (logs, burst file).")
@fails_cleanly
def alarms_bench(count, via, batch, per_message, concurrency, no_baseline, keep):
    """A feeder-trip burst from the HES to all four subscribers, beside plain pika publish/consume.

    Times from the first alarm sent to the last one stored by every subscriber
    (MDMS-1 critical, WFM health, FMS fraud, ADMS outage: real HTTP stand-ins).
    Needs a RabbitMQ node with the management plugin (`gridbus dev up`)."""
    import shutil

    from gridbus_dev.bench.alarms import bench_alarms

    runs = []
    for i, mode in enumerate(["rest", "amqp"] if via == "both" else [via]):
        work = Path(tempfile.mkdtemp(prefix=f"gridbus-bench-alarms-{mode}-"))

        line = Progress()

        def progress(state):
            line.show("  ".join(f"{s} {n:,}/{e:,}" for s, (n, e) in state.items()))

        last = i == (1 if via == "both" else 0)
        runs += bench_alarms(count, mode, work, baseline=last and not no_baseline, concurrency=concurrency,
                             batch=batch, echo=lambda m: click.echo(m, err=True), progress=progress,
                             per_message=per_message)
        line.done()
        if keep:
            click.echo(f"work folder kept: {work}", err=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    base = next((r for r in runs if r.pipeline.startswith("baseline")), None)
    rows = []
    for run in runs:
        ratio = f"{run.alarms_per_s / base.alarms_per_s:.2f}" if base and run is not base else ""
        rows.append([run.pipeline, f"{run.alarms:,}", f"{run.sent_s:.2f}", f"{run.seconds:.2f}",
                     f"{run.alarms_per_s:,.0f}", ratio,
                     "  ".join(f"{s} {t:.1f}s/{run.expected[s]:,}" for s, t in run.per_subscriber_s.items())])
    click.echo(table(rows, ["pipeline", "alarms", "HES sent in s", "s (first sent to last delivered)", "alarms/s",
                            "gridbus/baseline", "per subscriber: done at / events"]))


def _rates(ctx, param, value: str) -> list[float]:
    try:
        rates = [float(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: numbers separated by commas, e.g. 50,100,200") from None
    if not rates or any(not 0.1 <= r <= 10_000 for r in rates):
        raise click.BadParameter(f"{value!r}: each rate between 0.1 and 10000 requests/s")
    return rates


@bench.command("rpc")
@click.option("--rate", "rates", default="200", show_default=True, callback=_rates,
              help="On-demand read requests per second; several (50,100,200) run one after another. "
                   "A rate given more than once (200,200,200) reports how many of its runs met the target.")
@click.option("--seconds", default=30.0, show_default=True, type=click.FloatRange(1, 3600))
@click.option("--no-baseline", is_flag=True, help="Run gridbus only.")
@click.option("--path", "path", type=click.Choice(["hes", "billing", "both"]), default="both", show_default=True,
              help="hes: MDMS-1 asks, one bus hop to the HES; billing: billing-1 asks, two hops "
                   "(billing → MDMS-1 → HES); both: one run each.")
@click.option("--keep", is_flag=True, help="Keep the work folder (logs).")
@fails_cleanly
def rpc_bench(rates, seconds, no_baseline, path, keep):
    """On-demand read round trips through gateway and bus to the HES and back, beside direct HTTP.

    p50/p95/p99 latency and errors at a fixed request rate (open loop), and
    the CPU each process spent per request.  Needs a RabbitMQ node with the
    management plugin (`gridbus dev up`)."""
    import shutil

    from gridbus_dev.bench.rpc import TARGET_P99_MS, bench_rpc, runs_within_target, within_target

    work = Path(tempfile.mkdtemp(prefix="gridbus-bench-rpc-"))
    try:
        runs = bench_rpc(rates, seconds, work, not no_baseline, path, echo=lambda m: click.echo(m, err=True))
    finally:
        if keep:
            click.echo(f"work folder kept: {work}", err=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    rows = [[r.pipeline, f"{r.rate:g}", f"{r.achieved_rate:,.0f}", f"{len(r.latencies_ms):,}", r.errors,
             f"{r.pct(50):.1f}", f"{r.pct(95):.1f}", f"{r.pct(99):.1f}",
             f"{max(r.latencies_ms, default=float('nan')):.1f}"] for r in runs]
    click.echo(table(rows, ["pipeline", "asked/s", "sent/s", "ok", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms"]))
    names = sorted({n for r in runs for n in r.cpu_s})
    if names:
        click.echo("\nCPU ms per request, by process:")
        cpu_rows = []
        for r in runs:
            per = r.cpu_ms_per_request()
            cpu_rows.append([r.pipeline, f"{r.rate:g}", *(f"{per.get(n, 0):.2f}" for n in names),
                             f"{sum(per.values()):.2f}"])
        click.echo(table(cpu_rows, ["pipeline", "asked/s", *names, "total"]))
    click.echo(f"\nhighest rate asked with zero errors and p99 ≤ {TARGET_P99_MS:g} ms (the issue's target):")
    for pipeline, best in within_target(runs).items():
        click.echo(f"  {pipeline}: {f'{best:g}/s' if best else 'none of the rates run'}")
    counts = runs_within_target(runs)
    if any(total > 1 for _, total in counts.values()):
        click.echo("\nruns within the target, by rate asked (a rate asked several times):")
        for (pipeline, rate), (met, total) in counts.items():
            if total > 1:
                click.echo(f"  {pipeline} at {rate:g}/s: {met} of {total}")
    for r in runs:
        for example in r.error_examples:
            click.echo(f"  {r.pipeline}: {example}", err=True)


@bench.command("dlq")
@click.option("--count", default=10000, show_default=True, help="Dead letters to make, list and replay.")
@click.option("--keep", is_flag=True, help="Keep the work folder.")
@fails_cleanly
def dlq_bench(count, keep):
    """`dlq list --group` and `dlq replay --all` over COUNT real dead letters, timed as commands."""
    import shutil

    from gridbus_dev.bench.dlq import bench_dlq

    work = Path(tempfile.mkdtemp(prefix=f"gridbus-bench-dlq-{count}-"))
    result = bench_dlq(count, work, lambda m: click.echo(m, err=True))
    click.echo(result["list_output"].rstrip())
    click.echo("")
    click.echo(table([
        ["dead letters", f"{result['dead_letters']:,}"],
        ["dlq list --group (first: collects from the queue into the store)", f"{result['list_first_s']:.2f} s"],
        ["dlq list --group (again: store only)", f"{result['list_again_s']:.2f} s"],
        ["dlq replay --all (published and confirmed)", f"{result['replay_s']:.2f} s"],
        ["... until the MDMS stored every replayed reading", f"{result['replay_delivered_s']:.2f} s"],
    ], ["measure", "value"]))
    if keep:
        click.echo(f"work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


@bench.command("trace")
@click.option("--events", default=10_000_000, show_default=True, help="Read events in the trace store.")
@click.option("--keep", is_flag=True, help="Keep the work folder (the filled store).")
@fails_cleanly
def trace_bench(events, keep):
    """`trace --meter` over a store holding EVENTS read events (filled as the recorder fills it)."""
    import shutil

    from gridbus_dev.bench.trace_query import bench_trace

    work = Path(tempfile.mkdtemp(prefix="gridbus-bench-trace-"))
    r = bench_trace(events, work, lambda m: click.echo(m, err=True))
    click.echo(table([
        ["trace events in the store", f"{r['events']:,}"],
        ["(meter, batch) index rows", f"{r['meter_rows']:,} over {r['meters']:,} meters"],
        ["store size", f"{r['size_mb']:,.0f} MB (filled in {r['fill_s']:.0f} s)"],
        ["batches per meter found", f"{r['hits_per_meter']}"],
        ["store query, median / max of 20 meters", f"{r['store_query_median_s'] * 1000:.1f} / "
                                                   f"{r['store_query_max_s'] * 1000:.1f} ms"],
        ["`gridbus trace --meter` process, median / max of 5", f"{r['cli_median_s']:.2f} / {r['cli_max_s']:.2f} s"],
    ], ["measure", "value"]))
    if keep:
        click.echo(f"work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


@bench.command("network")
@click.option("--consumers", default=1_000_000, show_default=True, help="Consumers in the network.")
@click.option("--lookups", default=10_000, show_default=True, help="Meters in the dts_of batch.")
@click.option("--only", type=click.Choice(["import", "delivery"]),
              help="import: the store figures alone; delivery: the DT move to both billing systems alone "
                   "(on a network of CONSUMERS built first).  Default: both, the move on the import's store.")
@click.option("--dts", default=100, show_default=True, help="DTs the reconfiguration moves (delivery).")
@click.option("--no-baseline", is_flag=True, help="Delivery: skip the direct-POST baseline.")
@click.option("--keep", is_flag=True, help="Keep the work folder (the stores, snapshots and logs).")
@click.option("--json", "as_json", is_flag=True, help="The run as JSON.")
@fails_cleanly
def network_bench(consumers, lookups, only, dts, no_baseline, keep, as_json):
    """Issue 18: CONSUMERS into an empty network store (a change document of creates, and a snapshot
    CSV), a 1 % changed snapshot diffed and applied, dts_of, beside a plain executemany baseline;
    then a feeder reconfiguration moving DTS DTs from the GIS's POST to the last consumer stored at
    both billing systems (gateway, publisher, two delivery processes, both billing stand-ins and a
    RabbitMQ node of its own), beside the same paths POSTed straight to the stand-ins."""
    import json
    import shutil

    from gridbus_dev.bench.network import bench_network, table_rows
    from gridbus_dev.bench.network_delivery import bench_delivery
    from gridbus_dev.bench.network_delivery import table_rows as delivery_rows

    work = Path(tempfile.mkdtemp(prefix="gridbus-bench-network-"))
    say = lambda m: click.echo(m, err=True)  # noqa: E731
    try:
        if only == "delivery":
            r = {"consumers": consumers, "delivery": bench_delivery(work / "delivery", consumers, dts,
                                                                    baseline=not no_baseline, say=say)}
            rows = delivery_rows(r["delivery"])
        else:
            r = bench_network(consumers, lookups, work, say=say,
                              delivery={"dts": dts, "baseline": not no_baseline} if only is None else False)
            rows = table_rows(r)
    finally:
        if keep:
            click.echo(f"work folder kept: {work}", err=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if as_json:
        click.echo(json.dumps(r, indent=2))
    else:
        click.echo(table(rows, ["measure", "value"]))


@bench.command("outages")
@click.option("--gasps", default=200_000, show_default=True, type=click.IntRange(1000, 2_000_000),
              help="Events of the storm before the restorations (meters out, repeats and redeliveries).")
@click.option("--consumers", default=100_000, show_default=True, type=click.IntRange(1000, 2_000_000),
              help="Consumers of the generated network (one DT per 100).")
@click.option("--feeders", default=40, show_default=True, type=click.IntRange(2, 1000))
@click.option("--seed", default=1, show_default=True)
@click.option("--restore-after", default=360.0, show_default=True, type=click.FloatRange(1, 480),
              help="Seconds from the trips to the restorations (the generator's 30 minutes compressed).")
@click.option("--phases", default="latency,throughput,baseline", show_default=True,
              help="Any of latency (real time, accuracy and declaration latency), throughput (a backlog "
                   "drained by one process, then by two) and baseline (the raw-event route), comma-separated.")
@click.option("--keep", is_flag=True, help="Keep the work folder (stores, logs, the route file).")
@click.option("--json", "as_json", is_flag=True, help="The run as JSON.")
@fails_cleanly
def outages_bench(gasps, consumers, feeders, seed, restore_after, phases, keep, as_json):
    """Issue 19: a storm of GASPS last gasps from 1,000 DTs on 40 feeders, then restorations, through
    `gridbus outages run` to the ADMS stand-in over AMQP, against the generator's ground truth:
    precision and recall of DT and feeder outages, declaration latency (real time), the correlator's
    events/s draining the storm as a backlog with one process and with two, beside the raw-event
    route (`gridbus worker`, REST to the ADMS) delivering the same events.  Its own RabbitMQ node;
    about 12 minutes at the defaults."""
    import json
    import shutil

    from gridbus_dev.bench.outages import PHASES, bench_outages, table_rows

    chosen = tuple(p.strip() for p in phases.split(",") if p.strip())
    if not chosen or any(p not in PHASES for p in chosen):
        raise click.BadParameter(f"{phases!r}: some of {', '.join(PHASES)}", param_hint="--phases")
    work = Path(tempfile.mkdtemp(prefix="gridbus-bench-outages-"))
    try:
        r = bench_outages(work, gasps, consumers, feeders, seed, restore_after, chosen,
                          say=lambda m: click.echo(m, err=True))
    finally:
        if keep:
            click.echo(f"work folder kept: {work}", err=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if as_json:
        click.echo(json.dumps(r, indent=2, default=str))
    else:
        click.echo(table(table_rows(r), ["measure", "value"]))


@bench.command("chaos")
@click.option("--scenario", "scenarios", multiple=True,
              type=click.Choice(["node-kill", "rolling-restart", "disk-alarm", "none"]),
              help="A fault to inject (repeatable; default: the three faults, each on a cluster of its own); "
                   "none: the same load without a fault, the control.")
@click.option("--rows", default=2_000_000, show_default=True, help="Interval rows in the dropped file.")
@click.option("--alarms", default=50_000, show_default=True, help="Alarms in the feeder-trip burst.")
@click.option("--read-rate", default=100.0, show_default=True, help="On-demand reads per second through the gateway.")
@click.option("--read-seconds", default=60.0, show_default=True, help="For how long the reads are sent.")
@click.option("--fault-after", default=30.0, show_default=True,
              help="The fault comes once MDMS-1 holds a quarter of the file's readings (mid-ingest), or "
                   "this many seconds after the load starts, whichever is first.")
@click.option("--down", "down_s", default=15.0, show_default=True, help="node-kill: seconds the node stays down.")
@click.option("--alarm-for", "alarm_s", default=15.0, show_default=True, help="disk-alarm: seconds the alarm lasts.")
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(3, 5))
@click.option("--keep", is_flag=True, help="Keep the work folder (node data and logs, process logs).")
@click.option("--json", "as_json", is_flag=True, help="The counts as JSON.")
@fails_cleanly
def chaos_bench(scenarios, rows, alarms, read_rate, read_seconds, fault_after, down_s, alarm_s, nodes, keep, as_json):
    """Issue 20: a file ingest, an alarm burst and on-demand reads on a local cluster of its own while a
    node is killed with kill -9 (the leader of the busiest quorum queues), every node restarts in turn,
    or the disk alarm trips; then every message is counted at its destination: lost, unexpected (stored,
    never sent), redelivered (repeats the idempotent stand-ins absorbed), and each read answered right,
    failed with a reason, hung or answered with another request's data; and the recovery time."""
    import json

    from gridbus_dev.bench.chaos import SCENARIOS, Load, bench_chaos, remove

    load = Load(rows=rows, alarms=alarms, read_rate=read_rate, read_seconds=read_seconds,
                fault_after_s=fault_after, down_s=down_s, alarm_s=alarm_s)
    work = Path(tempfile.mkdtemp(prefix="gridbus-bench-chaos-"))
    line = Progress()

    def progress(readings, expected, events, expected_events):
        line.show(f"readings {readings:>10,}/{expected:,}  events "
                  + " ".join(f"{s} {events[s]:,}/{expected_events[s]:,}" for s in events))

    try:
        results = bench_chaos(list(scenarios) or list(SCENARIOS), load, work, nodes,
                              echo=lambda m: click.echo(m, err=True), progress=progress)
        line.done()
    finally:
        if keep:
            click.echo(f"work folder kept: {work}", err=True)
        else:
            remove(work)
    if as_json:
        click.echo(json.dumps([r.summary() for r in results], indent=2))
        return
    rows_out = []
    for r in results:
        reads = r.reads
        rows_out.append([r.scenario, f"{r.lost:,}", f"{r.unexpected:,}", f"{r.redelivered:,}",
                         f"{reads.ok:,}/{reads.failed:,}/{reads.hung:,}/{reads.wrong:,}",
                         f"{r.recovery_s:.1f}" if r.recovery_s is not None else "n/a", f"{r.seconds:.0f}"])
    click.echo(table(rows_out, ["scenario", "lost", "unexpected", "redelivered", "reads ok/failed/hung/wrong",
                                "recovery s", "run s"]))
    for r in results:
        click.echo(f"\n{r.scenario}: {r.fault}")
        click.echo(f"  readings: sent {r.readings.sent:,}, stored {r.readings.stored:,}, "
                   f"redelivered {r.readings.redelivered:,}, dead-lettered {r.readings.dead_lettered:,}")
        for system, c in r.alarms.items():
            click.echo(f"  {system}: sent {c.sent:,}, stored {c.stored:,}, redelivered {c.redelivered:,}")
        click.echo(f"  alarm POST answers: {r.alarm_posts}; read failures: {r.reads.failures}")
        for note in r.notes:
            click.echo(f"  note: {note}")


@bench.command("replication")
@click.option("--reads", default=2_000_000, show_default=True, help="Interval rows for bench ingest (0: skip).")
@click.option("--alarms", default=50_000, show_default=True, help="Alarms for bench alarms (0: skip).")
@click.option("--rounds", default=1, show_default=True, type=click.IntRange(1, 5),
              help="1 node then 3 nodes, this many times (the ratio uses the means).")
@click.option("--keep", is_flag=True, help="Keep the work folder.")
@fails_cleanly
def replication_bench(reads, alarms, rounds, keep):
    """Issue 20: `bench ingest` and `bench alarms` on a one-node and on a three-node local cluster, in one
    run: the cost of replicating every quorum queue on three nodes (on one machine, a bound)."""
    import shutil

    from gridbus_dev.bench.replication import bench_replication, ratios

    work = Path(tempfile.mkdtemp(prefix="gridbus-bench-replication-"))
    try:
        runs = bench_replication(reads, alarms, rounds, work, echo=lambda m: click.echo(m, err=True))
    finally:
        if keep:
            click.echo(f"work folder kept: {work}", err=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    click.echo(table([[r.bench, str(r.nodes), f"{r.rate:,.0f}", f"{r.seconds:.1f}"] for r in runs],
                     ["bench", "nodes", "rate", "s"]))
    for bench, ratio in ratios(runs).items():
        click.echo(f"{bench}: 3 nodes / 1 node = {ratio:.2f}")
