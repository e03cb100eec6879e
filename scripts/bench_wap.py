#!/usr/bin/env python3
"""The write-audit-publish benchmark: orchestrator vs DuckDB vs pandas on the same files.

Called by scripts/bench-wap, which builds the binaries and generates the data. The five
stages (crawl, drop temp, create temp with the window columns, quality check, publish)
are taken from workflows/daily.yaml itself (only `ingest` is removed and `crawl` points at
the generated CSVs), so the benchmark runs exactly the SQL of the reference pipeline.
DuckDB runs that same SQL; pandas computes the same columns with groupby/rolling. Each
engine runs the pipeline twice: run 1 publishes into an empty production table, run 2
publishes the same day again (an idempotent publish that inserts nothing).
"""
import argparse
import glob
import json
import os
import pathlib
import shutil
import subprocess
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent


def wap_workflow(work, bars):
    doc = yaml.safe_load((ROOT / "workflows" / "daily.yaml").read_text())
    del doc["tasks"]["ingest"]
    # The daily run computes one day from a 45-day lookback; the benchmark computes every
    # row of the one generated partition (a full-history rebuild), as it always has.
    create = doc["tasks"]["create_temp"]
    lookback = "WHERE dt BETWEEN '{{ run.date | add_days(-45) }}' AND '{{ run.date }}'"
    keep_day = "WHERE date = '{{ run.date }}'"
    if lookback not in create["sql"] or keep_day not in create["sql"]:
        raise SystemExit("daily.yaml's create_temp changed: update scripts/bench_wap.py")
    create["sql"] = (create["sql"].replace(lookback, "WHERE dt = '{{ run.date }}'")
                     .replace(keep_day, ""))
    crawl = doc["tasks"]["crawl"]
    crawl.pop("after", None)
    crawl.pop("role", None)  # the aws backend's crawler role
    crawl["path"] = str(bars)
    # The data alerts after publish are not part of write-audit-publish.
    doc["tasks"].pop("signal_alerts", None)
    doc["name"] = "wap_bench"
    doc["params"] = {}
    path = work / "wap.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))
    return doc, path


def run_orchestrator(binary, work, wf_path, date):
    state = work / "orchestrator-state"
    results = []
    for _ in range(2):
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [binary, "--state-dir", state, "run", wf_path, "--date", date, "-q"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stdout, stderr = proc.communicate()
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"orchestrator run failed:\n{stdout}\n{stderr}")
        run_id = stdout.split()[1]
        show = json.loads(subprocess.run(
            [binary, "--state-dir", state, "show", run_id, "--json"],
            capture_output=True, text=True, check=True).stdout)
        stages = {}
        for t in show["tasks"]:
            from datetime import datetime
            s = datetime.fromisoformat(t["started_at"])
            e = datetime.fromisoformat(t["ended_at"])
            stages[t["id"]] = (e - s).total_seconds()
        stages["(whole run, process included)"] = wall
        results.append(stages)
    # Peak RSS of the two runs (the largest child this process has waited for).
    import resource
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return results, rss


def in_child(fn, *args):
    """Runs fn(*args) in a forked process; returns (its result, its peak RSS in MB)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            data = json.dumps(fn(*args)).encode()
            code = 0
        except BaseException as e:  # reported by the parent
            data = json.dumps({"error": repr(e)}).encode()
            code = 1
        with os.fdopen(w, "wb") as f:
            f.write(data)
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status, usage = os.wait4(pid, 0)
    result = json.loads(data)
    if status != 0:
        raise SystemExit(f"{fn.__name__} failed: {result}")
    return result, usage.ru_maxrss / 1024


def checks_sql(doc, table_expr):
    """The quality rules of daily.yaml as (name, violation-count SQL) for DuckDB."""
    out = []
    for check in doc["tasks"]["quality_check"]["checks"]:
        (kind, arg), = check.items()
        t = table_expr
        if kind == "row_count":
            out.append(("row_count", f"SELECT CASE WHEN count(*) >= {arg['min']} THEN 0 ELSE 1 END FROM {t}"))
        elif kind == "not_null":
            for c in arg:
                out.append((f"not_null({c})", f"SELECT count(*) FROM {t} WHERE {c} IS NULL"))
        elif kind == "unique":
            cols = ", ".join(arg)
            out.append(("unique", f"SELECT count(*) FROM (SELECT {cols} FROM {t} GROUP BY {cols} HAVING count(*) > 1)"))
        elif kind == "accepted_range":
            out.append(("range", f"SELECT count(*) FROM {t} WHERE {arg['column']} < {arg['min']}"))
        elif kind == "accepted_values":
            vals = ", ".join(f"'{v}'" for v in arg["values"])
            out.append(("values", f"SELECT count(*) FROM {t} WHERE {arg['column']} IS NOT NULL AND {arg['column']} NOT IN ({vals})"))
        elif kind == "sql":
            out.append(("sql", f"SELECT count(*) FROM ({arg.replace('stock_daily_tmp', t)})"))
    return out


def run_duckdb(doc, work, bars, date):
    import duckdb
    tmp = work / "duckdb" / "stock_daily_tmp.parquet"
    prod = work / "duckdb" / "stock_daily"
    shutil.rmtree(work / "duckdb", ignore_errors=True)
    prod.mkdir(parents=True)
    sql = doc["tasks"]["create_temp"]["sql"].replace("{{ run.date }}", date)
    results = []
    for run in range(2):
        con = duckdb.connect()
        stages = {}
        t = time.perf_counter()
        con.execute(f"CREATE VIEW stock_raw AS SELECT * FROM read_csv('{bars}/*/*.csv', hive_partitioning = true, hive_types = {{'dt': VARCHAR}})")
        con.execute("SELECT count(*) FROM stock_raw").fetchone()
        stages["crawl"] = time.perf_counter() - t
        t = time.perf_counter()
        if tmp.exists():
            tmp.unlink()
        stages["drop_temp"] = time.perf_counter() - t
        t = time.perf_counter()
        con.execute(f"COPY ({sql}) TO '{tmp}' (FORMAT PARQUET)")
        stages["create_temp"] = time.perf_counter() - t
        t = time.perf_counter()
        failed = [n for n, q in checks_sql(doc, f"read_parquet('{tmp}')") if con.execute(q).fetchone()[0] != 0]
        if failed:
            raise SystemExit(f"duckdb audit failed: {failed}")
        stages["quality_check"] = time.perf_counter() - t
        t = time.perf_counter()
        parts = sorted(glob.glob(f"{prod}/*.parquet"))
        dest = prod / f"part-{run}.parquet"
        if not parts:
            con.execute(f"COPY (SELECT * FROM read_parquet('{tmp}')) TO '{dest}' (FORMAT PARQUET)")
        else:
            new = con.execute(
                f"SELECT count(*) FROM read_parquet('{tmp}') f WHERE NOT EXISTS "
                f"(SELECT 1 FROM read_parquet('{prod}/*.parquet') t WHERE t.symbol = f.symbol AND t.date = f.date)"
            ).fetchone()[0]
            if new:
                con.execute(
                    f"COPY (SELECT f.* FROM read_parquet('{tmp}') f WHERE NOT EXISTS "
                    f"(SELECT 1 FROM read_parquet('{prod}/*.parquet') t WHERE t.symbol = f.symbol AND t.date = f.date)) "
                    f"TO '{dest}' (FORMAT PARQUET)")
        stages["publish"] = time.perf_counter() - t
        con.close()
        results.append(stages)
    return results


def run_pandas(work, bars, date):
    import numpy as np
    import pandas as pd
    tmp = work / "pandas" / "stock_daily_tmp.parquet"
    prod = work / "pandas" / "stock_daily"
    shutil.rmtree(work / "pandas", ignore_errors=True)
    prod.mkdir(parents=True)
    results = []
    for run in range(2):
        stages = {}
        t = time.perf_counter()
        files = sorted(glob.glob(f"{bars}/dt={date}/*.csv"))
        raw = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
        raw["dt"] = date
        stages["crawl"] = time.perf_counter() - t
        t = time.perf_counter()
        if tmp.exists():
            tmp.unlink()
        stages["drop_temp"] = time.perf_counter() - t
        t = time.perf_counter()
        df = raw[raw["dt"] == date].drop(columns=["dt"]).sort_values(["symbol", "date"], ignore_index=True)
        g = df.groupby("symbol", sort=False)
        prev_close = g["close"].shift(1)
        c5 = g["close"].rolling(5, min_periods=1)
        avg5 = c5.mean().reset_index(level=0, drop=True)
        n5 = c5.count().reset_index(level=0, drop=True)
        c20 = g["close"].rolling(20, min_periods=1)
        avg20 = c20.mean().reset_index(level=0, drop=True)
        n20 = c20.count().reset_index(level=0, drop=True)
        vol7 = g["volume"].shift(1).astype("float64").groupby(df["symbol"]).rolling(7, min_periods=1).mean().reset_index(level=0, drop=True)
        sma5 = avg5.where(n5 == 5)
        sma20 = avg20.where(n20 == 20)
        p5 = sma5.groupby(df["symbol"]).shift(1)
        p20 = sma20.groupby(df["symbol"]).shift(1)
        o, h, l, c = df["open"], df["high"], df["low"], df["close"]
        body, rng = (c - o).abs(), h - l
        upper, lower = h - np.maximum(o, c), np.minimum(o, c) - l
        pct = (c - prev_close) / prev_close * 100
        out = df.assign(
            daily_return=c - o,
            avg_price=(o + h + l + c) / 4,
            volatility=0.5 * np.log(h / l) ** 2 - (2 * np.log(2.0) - 1) * np.log(c / o) ** 2,
            price_change_pct=pct,
            rolling_avg_5d=avg5,
            volume_surge_ratio=df["volume"] / vol7,
            candle_type=np.select(
                [(rng == 0) | (body <= 0.1 * rng), (lower >= 2 * body) & (upper <= body), (upper >= 2 * body) & (lower <= body), c > o],
                ["doji", "hammer", "shooting_star", "bullish"], "bearish"),
            is_market_up=c > o,
            sma_5=sma5,
            sma_20=sma20,
            signal=np.select([(p5 <= p20) & (sma5 > sma20), (p5 >= p20) & (sma5 < sma20)], ["BUY", "SELL"], None),
            is_anomaly=(pct.abs() > 5).fillna(False),
        )
        out.to_parquet(tmp, index=False)
        stages["create_temp"] = time.perf_counter() - t
        t = time.perf_counter()
        a = pd.read_parquet(tmp)
        problems = [
            len(a) < 1,
            a[["symbol", "date", "open", "high", "low", "close", "volume"]].isna().any().any(),
            a.duplicated(["symbol", "date"]).any(),
            (a["high"] < a["low"]).any(),
            (a["volume"] < 0).any(),
            ((a[["open", "high", "low", "close"]] <= 0).any(axis=1)).any(),
            (~a["signal"].isin(["BUY", "SELL"]) & a["signal"].notna()).any(),
        ]
        if any(problems):
            raise SystemExit(f"pandas audit failed: {problems}")
        stages["quality_check"] = time.perf_counter() - t
        t = time.perf_counter()
        parts = sorted(glob.glob(f"{prod}/*.parquet"))
        if not parts:
            a.to_parquet(prod / f"part-{run}.parquet", index=False)
        else:
            existing = pd.concat([pd.read_parquet(p, columns=["symbol", "date"]) for p in parts])
            merged = a.merge(existing, on=["symbol", "date"], how="left", indicator=True)
            new = merged[merged["_merge"] == "left_only"].drop(columns=["_merge"])
            if len(new):
                new.to_parquet(prod / f"part-{run}.parquet", index=False)
        stages["publish"] = time.perf_counter() - t
        results.append(stages)
    return results


STAGES = ["crawl", "drop_temp", "create_temp", "quality_check", "publish"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True, type=pathlib.Path)
    ap.add_argument("--bars", required=True, type=pathlib.Path)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--date", required=True)
    args = ap.parse_args()
    doc, wf = wap_workflow(args.work, args.bars)
    import duckdb
    import pandas
    # Orchestrator runs first, as a child process: its peak RSS is the largest child's so
    # far. DuckDB and pandas each run in a forked child of their own, measured by wait4.
    measured = {
        "orchestrator": run_orchestrator(args.bin, args.work, wf, args.date),
        f"duckdb {duckdb.__version__}": in_child(run_duckdb, doc, args.work, args.bars, args.date),
        f"pandas {pandas.__version__}": in_child(run_pandas, args.work, args.bars, args.date),
    }
    engines = {name: results for name, (results, _) in measured.items()}
    for run in range(2):
        label = "run 1: publish into an empty table" if run == 0 else "run 2: the same day again (idempotent publish, 0 inserted)"
        print(f"\n{label}")
        print(f"| stage | " + " | ".join(engines) + " |")
        print("|---|" + "---|" * len(engines))
        for s in STAGES:
            print(f"| {s} | " + " | ".join(f"{r[run][s]:.2f} s" for r in engines.values()) + " |")
        print("| **WAP total** | " + " | ".join(f"**{sum(r[run][s] for s in STAGES):.2f} s**" for r in engines.values()) + " |")
        wall = engines["orchestrator"][run]["(whole run, process included)"]
        print(f"(orchestrator whole `run`, process start and state included: {wall:.2f} s)")
    print("\n| peak RSS (both runs) | " + " | ".join(f"{rss:.0f} MB" for _, rss in measured.values()) + " |")


if __name__ == "__main__":
    main()
