// A small .NET host that drives storybridge workers through the contract only. CI compiles it with Mono
// `mcs` and runs it against real workers (tests/test_csharp_host.py).
//
//   mono host.exe oneshot ARGS.json TIMEOUT_S -- WORKER_ARGV...   one job, typed as the fixture's result
//   mono host.exe whisper ARGS.json TIMEOUT_S -- WORKER_ARGV...   one job, typed as the whisper result
//   mono host.exe serve   ARGS.json TIMEOUT_S -- WORKER_ARGV...   warm: ping, the job twice, a bad line, shutdown
//
// It prints one JSON report on stdout.
using System;
using System.Collections.Generic;
using System.IO;
using System.Runtime.Serialization;
using System.Text;
using StoryBridge;

[DataContract]
public class FixtureResult
{
    [DataMember(Name = "mode")] public string Mode { get; set; }
    [DataMember(Name = "invocation")] public int Invocation { get; set; }
    [DataMember(Name = "echo")] public string Echo { get; set; }
}

[DataContract]
public class WhisperFiles
{
    [DataMember(Name = "srt_path")] public string SrtPath { get; set; }
    [DataMember(Name = "vtt_path")] public string VttPath { get; set; }
}

[DataContract]
public class WhisperResult
{
    [DataMember(Name = "text")] public string Text { get; set; }
    [DataMember(Name = "language")] public string Language { get; set; }
    [DataMember(Name = "cue_count")] public int CueCount { get; set; }
    [DataMember(Name = "files")] public WhisperFiles Files { get; set; }
}

[DataContract]
public class HostReport
{
    [DataMember(Name = "exit_code")] public int ExitCode { get; set; }
    [DataMember(Name = "timed_out")] public bool TimedOut { get; set; }
    [DataMember(Name = "protocol_error")] public string ProtocolError { get; set; }
    [DataMember(Name = "success")] public bool? Success { get; set; }
    [DataMember(Name = "kind")] public string Kind { get; set; }
    [DataMember(Name = "retryable")] public bool? Retryable { get; set; }
    [DataMember(Name = "should_retry")] public bool ShouldRetry { get; set; }
    [DataMember(Name = "field_error_paths")] public List<string> FieldErrorPaths { get; set; }
    [DataMember(Name = "outputs")] public List<string> Outputs { get; set; }
    [DataMember(Name = "progress_events")] public int ProgressEvents { get; set; }
    [DataMember(Name = "echo")] public string Echo { get; set; }
    [DataMember(Name = "text")] public string Text { get; set; }
    [DataMember(Name = "cue_count")] public int CueCount { get; set; }
    [DataMember(Name = "srt_path")] public string SrtPath { get; set; }
    [DataMember(Name = "serve_lines")] public List<string> ServeLines { get; set; }
    [DataMember(Name = "serve_exit_code")] public int ServeExitCode { get; set; }
}

public static class HostDemo
{
    static HostReport Report<T>(WorkerOutcome<T> outcome)
    {
        var report = new HostReport
        {
            ExitCode = outcome.ExitCode, TimedOut = outcome.TimedOut, ProtocolError = outcome.ProtocolError,
            ShouldRetry = outcome.ShouldRetry, ProgressEvents = outcome.ProgressEvents, Outputs = new List<string>(),
        };
        var env = outcome.Envelope;
        if (env == null) return report;
        report.Success = env.Success;
        if (env.Outputs != null) foreach (var o in env.Outputs) report.Outputs.Add(o.Path);
        if (env.Error != null)
        {
            report.Kind = env.Error.Kind;
            report.Retryable = env.Error.Retryable;
            if (env.Error.Details != null && env.Error.Details.FieldErrors != null)
            {
                report.FieldErrorPaths = new List<string>();
                foreach (var f in env.Error.Details.FieldErrors) report.FieldErrorPaths.Add(f.Path);
            }
        }
        return report;
    }

    public static int Main(string[] args)
    {
        int dash = Array.IndexOf(args, "--");
        if (args.Length < 4 || dash != 3)
        {
            Console.Error.WriteLine("usage: host.exe oneshot|whisper|serve ARGS.json TIMEOUT_S -- WORKER_ARGV...");
            return 64;
        }
        string mode = args[0];
        string argsJson = File.ReadAllText(args[1], Encoding.UTF8);
        var timeout = TimeSpan.FromSeconds(double.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture));
        var argv = new List<string>();
        for (int i = dash + 1; i < args.Length; i++) argv.Add(args[i]);

        HostReport report;
        if (mode == "oneshot")
        {
            var outcome = WorkerClient.Run<FixtureResult>(argv, argsJson, timeout);
            report = Report(outcome);
            if (outcome.Envelope != null && outcome.Envelope.Result != null) report.Echo = outcome.Envelope.Result.Echo;
        }
        else if (mode == "whisper")
        {
            var outcome = WorkerClient.Run<WhisperResult>(argv, argsJson, timeout);
            report = Report(outcome);
            var result = outcome.Envelope == null ? null : outcome.Envelope.Result;
            if (result != null)
            {
                report.Text = result.Text;
                report.CueCount = result.CueCount;
                report.SrtPath = result.Files == null ? null : result.Files.SrtPath;
            }
        }
        else if (mode == "serve")
        {
            report = new HostReport { ServeLines = new List<string>() };
            using (var warm = new WarmWorker(argv))
            {
                report.ServeLines.Add(warm.ReadyLine);
                report.ServeLines.Add(warm.Request("{\"op\": \"ping\", \"id\": \"p\"}"));
                report.ServeLines.Add(warm.Request("{\"id\": \"1\", \"args\": " + argsJson + "}"));
                report.ServeLines.Add(warm.Request("not json at all"));
                report.ServeLines.Add(warm.Request("{\"id\": \"2\", \"args\": " + argsJson + "}"));
                report.ServeExitCode = warm.Shutdown();
            }
            var second = Contract.Parse<Envelope<FixtureResult>>(report.ServeLines[4]);
            report.Success = second.Success;
            report.Echo = second.Result == null ? null : second.Result.Echo;
        }
        else
        {
            Console.Error.WriteLine("unknown mode " + mode);
            return 64;
        }
        var stdout = Console.OpenStandardOutput();
        var bytes = Encoding.UTF8.GetBytes(Contract.ToJson(report) + "\n");
        stdout.Write(bytes, 0, bytes.Length);
        stdout.Flush();
        return 0;
    }
}
