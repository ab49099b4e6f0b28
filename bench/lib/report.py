"""Markdown tables for BENCHMARKS.md."""
import datetime
import os
import shlex
import statistics
import subprocess

import procstat

TARGETS = {
    "ingress": "target: >= 15,000 msgs/s at 100 connections, 1 KB",
    "relay": "SMTP in -> fsynced spool -> SMTP out (plaintext, up to 32 connections) to a second "
             "server that discards (queue null); target: the sender's CPU per mail no more than "
             "A2's (NATS)",
    "nats": "target: end-to-end >= 25% of the JetStream ceiling",
    "amqp": "target: end-to-end >= 80% of the RabbitMQ confirm ceiling",
    "kafka": "no target in the issues; ratio to the raw producer ceiling shown",
    "loghook": "target: the log hook adds <= 30% cost (CPU) per mail; mail to a Maildir, "
               "Reception and Delivery records to NATS in batches of 100",
    "loghook-d1": "D1 as written (every record its own NATS publish) against A2",
    "nats100k": "100 KB bodies through A2",
    "backlog": "the whole backlog is accepted while the broker is down; then the broker starts",
    "backlog-smtp": "the whole backlog is accepted while the receiving MTA is down; then it starts",
}


def plot_link(r):
    return f"[png]({r['plot']})" if r.get("plot") else "n/a"


def backlog_table(rows):
    return table(
        ["case", "accepted", "at broker", "SMTP msgs/s", "RSS waiting MiB", "peak RSS MiB",
         "first at broker s", "drain s", "drain msgs/s", "drain msgs/s after first",
         "CPU s/1k inject", "CPU s/1k drain", "plot"],
        [[r["case"], fmt(r.get("accepted")),
          fmt(r.get("at_broker")) + ("" if r.get("complete") else " (timeout)"),
          fmt(r.get("smtp_msgs_per_sec")), fmt(r.get("rss_waiting_mb")), fmt(r.get("peak_rss_mb")),
          fmt(r.get("first_at_broker_secs"), ".1f"), fmt(r.get("drain_secs"), ".1f"),
          fmt(r.get("drain_msgs_per_sec")), fmt(r.get("drain_after_first_msgs_per_sec")),
          fmt(r.get("cpu_per_1k_inject"), ".3f"), fmt(r.get("cpu_per_1k_drain"), ".3f"), plot_link(r)]
         if "note" not in r else [r["case"], r["note"]] + [""] * 11 for r in rows])


def relay_lines(rows, results, cores):
    """The relay table, where the machine's CPU went, and the sender's CPU per mail against
    A2's when this run measured A2 too (`--scenario relay,nats --cases A2`)."""
    out = [table(
        ["case", "mails", "delivered", "at sink", "SMTP msgs/s", "e2e msgs/s", "deliv. p50 ms",
         "deliv. p99 ms", "sender CPU ms/mail", "sink CPU ms/mail", "sender peak RSS MiB",
         "sink peak RSS MiB", "plot"],
        [[r["case"], fmt(r.get("accepted")),
          fmt(r.get("delivered")) + ("" if r.get("complete") else " (timeout)"),
          fmt(r.get("at_sink")), fmt(r.get("smtp_msgs_per_sec")), fmt(r.get("e2e_msgs_per_sec")),
          fmt(r.get("p50_ms"), ".1f"), fmt(r.get("p99_ms"), ".1f"), fmt(r.get("cpu_per_1k"), ".3f"),
          fmt(r.get("sink_cpu_per_1k"), ".3f"), fmt(r.get("peak_rss_mb"), ".0f"),
          fmt(r.get("sink_peak_rss_mb"), ".0f"), plot_link(r)]
         if "note" not in r else [r["case"], r["note"]] + [""] * 11 for r in rows])]
    rated = [r for r in rows if r.get("cpu_budget", {}).get("machine")]
    if rated and cores:
        out += ["", f"CPU per 1,000 mails, all processes (the bound is {cores} cores x 1,000 / total):",
                "", table(["case", "sender (hermod)", "sink (hermod)", "load generator and rest",
                           "total", "bound msgs/s"],
                          [[r["case"], fmt(b["server"], ".3f"), fmt(b["other"], ".3f"),
                            fmt(b["rest"], ".3f"), fmt(b["machine"], ".3f"),
                            fmt(cores * 1000 / b["machine"])]
                           for r in rated for b in [r["cpu_budget"]]])]
    a2 = next((r for r in results.get("nats", []) if r.get("case") == "A2" and r.get("cpu_per_1k")),
              None)
    relay = next((r for r in rows if r.get("cpu_per_1k")), None)
    if relay and a2:
        ratio = relay["cpu_per_1k"] / a2["cpu_per_1k"] - 1
        verdict = "met" if ratio <= 0 else "missed"
        out += ["", f"Sender CPU per mail: relay **{relay['cpu_per_1k']:.3f} ms** against A2 (NATS) "
                    f"**{a2['cpu_per_1k']:.3f} ms** in this run ({ratio * 100:+.0f}%); target: no "
                    f"more than the NATS path: {verdict}."]
    elif relay:
        out += ["", "A2 was not measured in this run; `--scenario relay,nats --cases A2` puts "
                    "both on the same machine at the same time."]
    return out


def run_meta(root, argv, args):
    def git(*a):
        r = subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True)
        return r.stdout.strip()
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(shlex.quote(a) for a in ["bench/run", *argv[1:]]),
        "cores": os.cpu_count(),
        "commit": git("rev-parse", "--short", "HEAD") + (" (+ uncommitted changes)" if dirty else ""),
        "load": procstat.loadavg(),
        "server": args.server_cmd or f"{args.hermod} serve (profile {args.profile})",
        "messages": args.messages,
    }


def fmt(v, spec=",.0f"):
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, (int, float)):
        return format(v, spec)
    return str(v)


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def loghook_lines(rows):
    """One table row per case and round; then each hook case's extra CPU per mail against the
    baseline of the same round, and the median over the rounds (the figure held to <= +30%)."""
    out = [table(
        ["round", "case", "mails", "delivered (mails + hook msgs)", "SMTP msgs/s", "mails/s",
         "log events/s", "CPU s/1k mails", "extra CPU vs round's baseline", "peak RSS MiB"],
        [[str(r.get("round", 1)), r["case"], fmt(r.get("accepted")),
          fmt(r.get("delivered")) + ("" if r.get("complete") else " (timeout)"),
          fmt(r.get("smtp_msgs_per_sec")), fmt(r.get("e2e_msgs_per_sec")),
          fmt(r.get("events_per_sec")), fmt(r.get("cpu_per_1k"), ".3f"),
          extra_text(r, rows), fmt(r.get("peak_rss_mb"), ".0f")]
         if "note" not in r else [str(r.get("round", 1)), r["case"], r["note"]] + [""] * 7
         for r in rows])]
    cases = []
    for r in rows:
        if r["case"] not in cases:
            cases.append(r["case"])
    for case in cases[1:]:
        extras = [e for e in (extra_of(r, rows) for r in rows if r["case"] == case) if e is not None]
        if extras:
            each = ", ".join(f"{e * 100:+.0f}%" for e in extras)
            out += ["", f"Extra CPU per mail, {case}: **median {statistics.median(extras) * 100:+.0f}%** "
                        f"over {len(extras)} round(s) ({each}; target <= +30%)."]
    return out


def extra_of(r, rows):
    """r's CPU per mail over the first case's in the same round, minus one."""
    base = next((b for b in rows if b.get("round", 1) == r.get("round", 1)), None)
    if base is None or base is r or not base.get("cpu_per_1k") or not r.get("cpu_per_1k"):
        return None
    return r["cpu_per_1k"] / base["cpu_per_1k"] - 1


def extra_text(r, rows):
    e = extra_of(r, rows)
    return "baseline" if e is None else f"{e * 100:+.0f}%"


def budget_lines(rows, ceiling_row, ceil, cores):
    """Where the machine's CPU went per 1,000 mails, and the rate those costs allow at most:
    every core busy, nothing else running. The load generator shares the cores, as does the
    broker, which alone needed `ceiling_row`'s broker CPU per 1,000 at its ceiling."""
    rated = [r for r in rows if r.get("cpu_budget", {}).get("machine")]
    if not rated or not cores:
        return []
    out = ["", f"CPU per 1,000 mails, all processes (the bound is {cores} cores x 1,000 / total):", "",
           table(["case", "hermod", "broker", "load generator and rest", "total",
                  "bound msgs/s", "bound / ceiling"],
                 [[r["case"], fmt(b["server"], ".3f"), fmt(b["broker"], ".3f"), fmt(b["rest"], ".3f"),
                   fmt(b["machine"], ".3f"), fmt(cores * 1000 / b["machine"]),
                   fmt(cores * 1000 / b["machine"] / ceil * 100, ".0f") + "%" if ceil else "n/a"]
                  for r in rated for b in [r["cpu_budget"]]])]
    at_ceiling = ceiling_row.get("cpu_budget", {}).get("broker")
    if at_ceiling:
        out += ["", f"At its ceiling the broker itself used {at_ceiling:.3f} CPU s per 1,000 messages."]
    return out


def render(meta, results, ceilings):
    lines = [f"## Run {meta['date']}", "",
             f"- command: `{meta['command']}`",
             f"- server: `{meta['server']}`",
             f"- commit {meta['commit']}, {meta['cores']} cores (`nproc`), "
             f"load average before {meta['load']}, after {meta.get('load_after', '?')}; "
             f"took {meta.get('elapsed_min', 0):.1f} min", ""]
    for scen, rows in results.items():
        lines += [f"### {scen}", "", f"_{TARGETS.get(scen, '')}_", ""]
        if scen == "loghook":
            lines += loghook_lines(rows)
        elif scen in ("backlog", "backlog-smtp"):
            lines.append(backlog_table(rows))
        elif scen == "relay":
            lines += relay_lines(rows, results, meta.get("cores"))
        elif scen == "ingress":
            lines.append(table(
                ["case", "msgs", "msgs/s", "p50 ms", "p99 ms", "fsyncs/msg", "CPU s/1k msgs", "peak RSS MiB",
                 "plot"],
                [[r["case"], fmt(r.get("messages")), fmt(r.get("msgs_per_sec")), fmt(r.get("p50_ms"), ".2f"),
                  fmt(r.get("p99_ms"), ".2f"), fmt(r.get("fsyncs_per_msg"), ".3f"),
                  fmt(r.get("cpu_per_1k"), ".3f"), fmt(r.get("peak_rss_mb"), ".0f"), plot_link(r)]
                 if "note" not in r else [r["case"], r["note"]] + [""] * 7 for r in rows]))
        else:
            ceil_row = ceilings.get({"loghook-d1": "nats"}.get(scen, scen), {})
            ceil = ceil_row.get("msgs_per_sec")
            lines.append(table(
                ["case", "mails", "at broker", "SMTP msgs/s", "e2e msgs/s", "e2e / ceiling",
                 "deliv. p50 ms", "deliv. p99 ms", "CPU s/1k mails", "peak RSS MiB", "plot"],
                [[r["case"], fmt(r.get("messages")), fmt(r.get("at_broker")) + ("" if r.get("complete") else " (timeout)"),
                  fmt(r.get("smtp_msgs_per_sec")), fmt(r.get("e2e_msgs_per_sec")),
                  fmt(r["e2e_msgs_per_sec"] / ceil * 100, ".0f") + "%" if ceil and r.get("e2e_msgs_per_sec") else "n/a",
                  fmt(r.get("p50_ms"), ".1f"), fmt(r.get("p99_ms"), ".1f"), fmt(r.get("cpu_per_1k"), ".3f"),
                  fmt(r.get("peak_rss_mb"), ".0f"), plot_link(r)]
                 if "note" not in r else [r["case"], r["note"]] + [""] * 9 for r in rows]))
            lines += budget_lines(rows, ceil_row, ceil, meta.get("cores"))
            if scen == "loghook-d1" and len(rows) == 2 and all(r.get("cpu_per_1k") for r in rows):
                extra = rows[1]["cpu_per_1k"] / rows[0]["cpu_per_1k"] - 1
                lines += ["", f"Log hook extra CPU per mail: **{extra * 100:+.0f}%** (D1 vs A2)."]
        hints = [f"- {r['case']}: {r['threads']}" for r in rows if r.get("threads")]
        if hints:
            lines += ["", "Busiest server threads (CPU seconds during the run):", ""] + hints
        lines.append("")
    if ceilings:
        lines += ["### broker ceilings (hermod-benchtool: acks/confirms awaited, pipelined)", "",
                  "e2e / ceiling divides by the 1,000-in-flight row. The 32-in-flight row is what "
                  "32 sessions publishing one message at a time could reach at best.", "",
                  table(["broker", "messages", "size B", "in flight", "msgs/s", "broker CPU s/1k msgs",
                         "machine CPU s/1k msgs"],
                        [[b, fmt(c["messages"]), fmt(c["size"]), fmt(c["window"]), fmt(c["msgs_per_sec"]),
                          fmt(c.get("cpu_budget", {}).get("broker"), ".3f"),
                          fmt(c.get("cpu_budget", {}).get("machine"), ".3f")]
                         for b, c in ceilings.items()]), ""]
    return "\n".join(lines)
