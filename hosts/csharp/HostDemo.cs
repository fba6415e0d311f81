// A small .NET host that drives storybridge workers through the contract only. CI compiles it with Mono
// `mcs` and runs it against real workers (tests/test_csharp_*.py). It prints one JSON report on stdout.
//
//   host.exe oneshot ARGS.json TIMEOUT_S -- WORKER_ARGV...      one job (fixture result fields echoed)
//   host.exe whisper ARGS.json TIMEOUT_S -- WORKER_ARGV...      one job, typed as the generated WhisperResult
//   host.exe serve   ARGS.json TIMEOUT_S -- WORKER_ARGV...      warm: ping, the job, a bad line, the job, shutdown
//   host.exe retry   ARGS.json TIMEOUT_S DELAYS CANCEL_S -- WORKER_ARGV   RunWithRetry, DELAYS before each retry: "0,0.5"
//                                                               (seconds); cancelled after CANCEL_S unless 0
//   host.exe warm-timeout ARGS.json TIMEOUT_S -- WORKER_ARGV    warm job that times out, then the same job again
//   host.exe pool    ARGS.json IDLE_S -- WORKER_ARGV...         WarmPool: reuse, restart a killed one, idle shutdown
//   host.exe parse   ENVELOPE_LINES.jsonl                       generated types over envelopes a worker printed
//   host.exe contract                                           the client's exit-code table and default retry delays
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Text;
using System.Threading;
using Newtonsoft.Json.Linq;
using StoryBridge;
using StoryBridge.Generated.EnvelopeSchema;
using StoryBridge.Generated.WhisperResultSchema;

public static class HostDemo
{
    static JObject Report(WorkerOutcome outcome)
    {
        var report = new JObject
        {
            { "exit_code", outcome.ExitCode }, { "timed_out", outcome.TimedOut }, { "cancelled", outcome.Cancelled },
            { "protocol_error", outcome.ProtocolError }, { "should_retry", outcome.ShouldRetry },
            { "progress_events", outcome.ProgressEvents },
            { "started_utc", outcome.StartedUtc.ToString("o", CultureInfo.InvariantCulture) },
        };
        var env = outcome.Envelope;
        if (env == null) return report;
        report["success"] = env.Success;
        var outputs = new JArray();
        if (env.Outputs != null) foreach (var o in env.Outputs) outputs.Add(o.Path);
        report["outputs"] = outputs;
        if (env.Result != null && env.Result.ContainsKey("echo")) report["echo"] = JToken.FromObject(env.Result["echo"] ?? "");
        if (env.Error == null) return report;
        report["kind"] = Contract.KindName(env.Error.Kind);
        report["retryable"] = env.Error.Retryable;
        object fieldErrors;
        if (env.Error.Details != null && env.Error.Details.TryGetValue("field_errors", out fieldErrors))
        {
            var paths = new JArray();
            foreach (var f in (JArray)fieldErrors) paths.Add(f["path"]);
            report["field_error_paths"] = paths;
        }
        return report;
    }

    static JObject Whisper(WorkerOutcome outcome)
    {
        var report = Report(outcome);
        var result = outcome.Envelope.ResultAs(WhisperResult.FromJson);
        if (result == null) return report;
        report["text"] = result.Text;
        report["cue_count"] = result.CueCount;
        report["srt_path"] = result.Files == null ? null : result.Files.SrtPath;
        return report;
    }

    static JObject Serve(IList<string> argv, string argsJson)
    {
        var lines = new JArray();
        int exitCode;
        using (var warm = new WarmWorker(argv))
        {
            lines.Add(warm.ReadyLine);
            lines.Add(warm.Request("{\"op\": \"ping\", \"id\": \"p\"}"));
            lines.Add(warm.Request("{\"id\": \"1\", \"args\": " + argsJson + "}"));
            lines.Add(warm.Request("not json at all"));
            lines.Add(warm.Request("{\"id\": \"2\", \"args\": " + argsJson + "}"));
            exitCode = warm.Shutdown();
        }
        var second = Envelope.FromJson((string)lines[4]);
        return new JObject { { "serve_lines", lines }, { "serve_exit_code", exitCode }, { "success", second.Success },
                             { "echo", second.Result == null ? null : JToken.FromObject(second.Result["echo"]) } };
    }

    static JObject Retry(IList<string> argv, string argsJson, TimeSpan timeout, string delays, string cancelAfter)
    {
        var parsed = new List<TimeSpan>();
        foreach (var d in delays.Split(',')) parsed.Add(TimeSpan.FromSeconds(double.Parse(d, CultureInfo.InvariantCulture)));
        double cancelSeconds = double.Parse(cancelAfter, CultureInfo.InvariantCulture);
        var cancel = new CancellationTokenSource();
        if (cancelSeconds > 0) cancel.CancelAfter(TimeSpan.FromSeconds(cancelSeconds));
        var attempts = WorkerClient.RunWithRetry(argv, argsJson, timeout, new RetryPolicy(parsed.ToArray()), cancel.Token);
        var reports = new JArray();
        foreach (var a in attempts) reports.Add(Report(a));
        return new JObject { { "attempts", reports } };
    }

    static JObject WarmTimeout(IList<string> argv, string argsJson, TimeSpan timeout)
    {
        using (var warm = new WarmWorker(argv))
        {
            int firstPid = warm.Pid;
            var hung = Report(warm.Run(argsJson, timeout));
            var after = warm.Request("{\"op\": \"ping\", \"id\": \"after\"}");
            return new JObject { { "hung", hung }, { "first_pid", firstPid }, { "second_pid", warm.Pid },
                                 { "restarts", warm.Restarts }, { "ping_after", after }, { "exit_code", warm.Shutdown() } };
        }
    }

    static JObject Pool(IList<string> argv, string argsJson, TimeSpan idle)
    {
        var report = new JObject();
        using (var pool = new WarmPool(idle))
        {
            var a = pool.Get(argv, "model-a");
            report["same_worker_reused"] = ReferenceEquals(a, pool.Get(argv, "model-a"));
            report["other_model_other_worker"] = !ReferenceEquals(a, pool.Get(argv, "model-b"));
            report["first"] = Report(pool.Run(argv, "model-a", argsJson, TimeSpan.FromSeconds(60)));
            int killedPid = a.Pid;
            ProcessTree.Kill(System.Diagnostics.Process.GetProcessById(killedPid));  // as if it crashed
            Thread.Sleep(200);
            report["after_kill"] = Report(pool.Run(argv, "model-a", argsJson, TimeSpan.FromSeconds(60)));
            report["started"] = pool.Started;
            report["restarted"] = pool.Get(argv, "model-a").Pid != killedPid;
            var deadline = DateTime.UtcNow + idle + idle + TimeSpan.FromSeconds(10);
            while (pool.Count > 0 && DateTime.UtcNow < deadline) Thread.Sleep(50);
            report["count_after_idle"] = pool.Count;
        }
        return report;
    }

    static JObject Parse(string path)
    {
        var parsed = new JArray();
        foreach (var line in File.ReadAllLines(path, Encoding.UTF8))
        {
            if (line.Trim().Length == 0) continue;
            var env = Envelope.FromJson(line);
            parsed.Add(new JObject { { "success", env.Success }, { "worker", env.Worker },
                                     { "kind", env.Error == null ? null : Contract.KindName(env.Error.Kind) },
                                     { "retryable", env.Error == null ? (bool?)null : env.Error.Retryable },
                                     { "outputs", env.Outputs == null ? 0 : env.Outputs.Length },
                                     { "run_s", env.Metrics == null ? (double?)null : env.Metrics.RunS } });
        }
        return new JObject { { "envelopes", parsed } };
    }

    static JObject ContractTables()
    {
        var table = new JObject();
        foreach (var entry in Contract.ExitCodes) table[Contract.KindName(entry.Key)] = entry.Value;
        var delays = new JArray();
        foreach (var delay in RetryPolicy.Default.Delays) delays.Add(delay.TotalSeconds);
        return new JObject { { "exit_codes", table }, { "retry_delays_s", delays }, { "version", Contract.Version } };
    }

    public static int Main(string[] args)
    {
        JObject report = args.Length == 0 ? null : Dispatch(args);
        if (report == null)
        {
            Console.Error.WriteLine("usage: see the header of HostDemo.cs");
            return 64;
        }
        var stdout = Console.OpenStandardOutput();
        var bytes = Encoding.UTF8.GetBytes(report.ToString(Newtonsoft.Json.Formatting.None) + "\n");
        stdout.Write(bytes, 0, bytes.Length);
        stdout.Flush();
        return 0;
    }

    static JObject Dispatch(string[] args)
    {
        string mode = args[0];
        if (mode == "parse") return Parse(args[1]);
        if (mode == "contract") return ContractTables();
        int dash = Array.IndexOf(args, "--");
        if (dash < 3 || (mode == "retry" && dash < 5)) return null;
        string argsJson = File.ReadAllText(args[1], Encoding.UTF8);
        var seconds = TimeSpan.FromSeconds(double.Parse(args[2], CultureInfo.InvariantCulture));
        var argv = new List<string>();
        for (int i = dash + 1; i < args.Length; i++) argv.Add(args[i]);
        switch (mode)
        {
            case "oneshot": return Report(WorkerClient.Run(argv, argsJson, seconds));
            case "whisper": return Whisper(WorkerClient.Run(argv, argsJson, seconds));
            case "serve": return Serve(argv, argsJson);
            case "retry": return Retry(argv, argsJson, seconds, args[3], args[4]);
            case "warm-timeout": return WarmTimeout(argv, argsJson, seconds);
            case "pool": return Pool(argv, argsJson, seconds);
            default: return null;
        }
    }
}
