// storybridge contract client for .NET hosts (C# 6/7; builds with Mono `mcs` and with the .NET SDK).
//
// What a host must do, in one place: pass an argv list (never a shell string), hand over the args as a
// UTF-8 JSON file, read stdout and stderr concurrently (a full stderr pipe would otherwise block the
// worker), take exactly one JSON envelope from stdout, and decide by `error.kind` / `retryable`, with the
// exit code as a cross-check. See docs/contract.md and schemas/*.schema.json.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Runtime.Serialization;
using System.Runtime.Serialization.Json;
using System.Text;
using System.Threading;

namespace StoryBridge
{
    [DataContract]
    public class FieldError
    {
        [DataMember(Name = "path")] public string Path { get; set; }
        [DataMember(Name = "message")] public string Message { get; set; }
        [DataMember(Name = "type")] public string Type { get; set; }
    }

    [DataContract]
    public class ErrorDetails
    {
        [DataMember(Name = "field_errors")] public List<FieldError> FieldErrors { get; set; }
        [DataMember(Name = "traceback")] public string Traceback { get; set; }
    }

    [DataContract]
    public class ErrorInfo
    {
        [DataMember(Name = "kind")] public string Kind { get; set; }
        [DataMember(Name = "message")] public string Message { get; set; }
        [DataMember(Name = "retryable")] public bool Retryable { get; set; }
        [DataMember(Name = "details")] public ErrorDetails Details { get; set; }
    }

    [DataContract]
    public class OutputFile
    {
        [DataMember(Name = "path")] public string Path { get; set; }
        [DataMember(Name = "sha256")] public string Sha256 { get; set; }
        [DataMember(Name = "bytes")] public long Bytes { get; set; }
        [DataMember(Name = "media_type")] public string MediaType { get; set; }
    }

    [DataContract]
    public class Metrics
    {
        [DataMember(Name = "load_s")] public double LoadSeconds { get; set; }
        [DataMember(Name = "run_s")] public double RunSeconds { get; set; }
        [DataMember(Name = "peak_rss_mb")] public double PeakRssMb { get; set; }
        [DataMember(Name = "peak_vram_mb")] public double? PeakVramMb { get; set; }
        [DataMember(Name = "device")] public string Device { get; set; }
        [DataMember(Name = "model_cache_hit")] public bool? ModelCacheHit { get; set; }
        [DataMember(Name = "model_loads")] public int? ModelLoads { get; set; }
    }

    /// <summary>The result envelope (schemas/envelope.schema.json). TResult is the worker's result type;
    /// members the host does not declare are ignored, so a host only models what it reads.</summary>
    [DataContract]
    public class Envelope<TResult>
    {
        [DataMember(Name = "contract_version")] public string ContractVersion { get; set; }
        [DataMember(Name = "worker")] public string Worker { get; set; }
        [DataMember(Name = "worker_version")] public string WorkerVersion { get; set; }
        [DataMember(Name = "success")] public bool Success { get; set; }
        [DataMember(Name = "result")] public TResult Result { get; set; }
        [DataMember(Name = "error")] public ErrorInfo Error { get; set; }
        [DataMember(Name = "outputs")] public List<OutputFile> Outputs { get; set; }
        [DataMember(Name = "metrics")] public Metrics Metrics { get; set; }
        [DataMember(Name = "warnings")] public List<string> Warnings { get; set; }
        // Present on warm-mode (--serve) lines only.
        [DataMember(Name = "event")] public string Event { get; set; }
        [DataMember(Name = "id")] public string Id { get; set; }
    }

    public static class Contract
    {
        public const string Version = "1.2.0";

        /// <summary>Exit code per error kind (docs/contract.md). 1 or a signal means: crashed, no answer.</summary>
        public static readonly Dictionary<string, int> ExitCodes = new Dictionary<string, int>
        {
            { "invalid_input", 2 }, { "model_unavailable", 3 }, { "resource", 4 },
            { "transient", 5 }, { "external", 6 }, { "internal", 7 },
        };

        public static T Parse<T>(string json)
        {
            var serializer = new DataContractJsonSerializer(typeof(T));
            using (var stream = new MemoryStream(Encoding.UTF8.GetBytes(json)))
            {
                return (T)serializer.ReadObject(stream);
            }
        }

        public static string ToJson<T>(T value)
        {
            var serializer = new DataContractJsonSerializer(typeof(T));
            using (var stream = new MemoryStream())
            {
                serializer.WriteObject(stream, value);
                return Encoding.UTF8.GetString(stream.ToArray());
            }
        }

        /// <summary>Quote one argument for Windows-style command lines (what .NET's ArgumentList does).
        /// Only needed on .NET Framework / Mono, which lack ProcessStartInfo.ArgumentList.</summary>
        public static string QuoteArgument(string arg)
        {
            if (arg.Length > 0 && arg.IndexOfAny(new[] { ' ', '\t', '\n', '\v', '"' }) < 0) return arg;
            var sb = new StringBuilder("\"");
            int backslashes = 0;
            foreach (char c in arg)
            {
                if (c == '\\') { backslashes++; continue; }
                if (c == '"') sb.Append('\\', backslashes * 2 + 1);
                else sb.Append('\\', backslashes);
                backslashes = 0;
                sb.Append(c);
            }
            sb.Append('\\', backslashes * 2);
            return sb.Append('"').ToString();
        }
    }

    public class WorkerOutcome<TResult>
    {
        public int ExitCode;
        public bool TimedOut;
        public Envelope<TResult> Envelope;   // null when the worker died without an answer
        public string ProtocolError;         // why there is no usable envelope
        public int ProgressEvents;
        public string Stderr;

        /// <summary>Retry only what a retry can help: the worker's word, or a crash / timeout.</summary>
        public bool ShouldRetry
        {
            get
            {
                if (Envelope != null && !Envelope.Success && Envelope.Error != null) return Envelope.Error.Retryable;
                return TimedOut || (Envelope == null && ExitCode != 0);
            }
        }
    }

    public static class WorkerClient
    {
        internal static ProcessStartInfo StartInfo(IList<string> argv, string workingDirectory)
        {
            var psi = new ProcessStartInfo
            {
                FileName = argv[0],
                UseShellExecute = false,
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                CreateNoWindow = true,
                StandardOutputEncoding = new UTF8Encoding(false),
                StandardErrorEncoding = new UTF8Encoding(false),
                WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
            };
            var rest = new List<string>();
            for (int i = 1; i < argv.Count; i++) rest.Add(Contract.QuoteArgument(argv[i]));
            psi.Arguments = string.Join(" ", rest);
            psi.EnvironmentVariables["PYTHONUTF8"] = "1";
            psi.EnvironmentVariables["PYTHONIOENCODING"] = "utf-8";
            return psi;
        }

        /// <summary>One job: `argv --input ARGS.json`; the envelope comes back parsed as Envelope&lt;TResult&gt;.</summary>
        public static WorkerOutcome<TResult> Run<TResult>(IList<string> argv, string argsJson, TimeSpan timeout,
                                                           string workingDirectory = null)
        {
            string argsFile = Path.Combine(Path.GetTempPath(), "storybridge-args-" + Guid.NewGuid().ToString("N") + ".json");
            File.WriteAllText(argsFile, argsJson, new UTF8Encoding(false));
            var fullArgv = new List<string>(argv) { "--input", argsFile };
            var outcome = new WorkerOutcome<TResult>();
            var stderr = new StringBuilder();
            int progress = 0;
            try
            {
                using (var process = new Process { StartInfo = StartInfo(fullArgv, workingDirectory) })
                {
                    process.ErrorDataReceived += (sender, e) =>
                    {
                        if (e.Data == null) return;
                        lock (stderr) stderr.AppendLine(e.Data);
                        if (e.Data.StartsWith("{\"event\":\"progress\"")) Interlocked.Increment(ref progress);
                    };
                    process.Start();
                    process.StandardInput.Close();
                    process.BeginErrorReadLine();  // stderr drains on its own thread: no pipe deadlock
                    var stdoutTask = process.StandardOutput.ReadToEndAsync();
                    if (!process.WaitForExit((int)timeout.TotalMilliseconds))
                    {
                        outcome.TimedOut = true;
                        try { process.Kill(); } catch (InvalidOperationException) { }  // .NET 5+: Kill(true) = whole tree
                        process.WaitForExit();
                    }
                    process.WaitForExit();  // flushes the async stderr reader
                    outcome.ExitCode = process.ExitCode;
                    ParseEnvelope(stdoutTask.Result, outcome);
                }
            }
            finally
            {
                File.Delete(argsFile);
            }
            outcome.ProgressEvents = progress;
            outcome.Stderr = stderr.ToString();
            return outcome;
        }

        static void ParseEnvelope<TResult>(string stdout, WorkerOutcome<TResult> outcome)
        {
            var lines = new List<string>();
            foreach (var line in stdout.Split('\n')) if (line.Trim().Length > 0) lines.Add(line);
            if (lines.Count != 1)
            {
                outcome.ProtocolError = lines.Count == 0 ? "no answer on stdout" : "more than one line on stdout";
                return;
            }
            try
            {
                outcome.Envelope = Contract.Parse<Envelope<TResult>>(lines[0]);
            }
            catch (SerializationException e)
            {
                outcome.ProtocolError = "stdout is not an envelope: " + e.Message;
                return;
            }
            var env = outcome.Envelope;
            int expected = env.Success ? 0 : (env.Error != null && Contract.ExitCodes.ContainsKey(env.Error.Kind) ? Contract.ExitCodes[env.Error.Kind] : -1);
            if (expected != outcome.ExitCode)
                outcome.ProtocolError = "exit code " + outcome.ExitCode + " does not match the envelope (expected " + expected + ")";
        }
    }

    /// <summary>Warm mode: one worker process, JSON-lines requests and responses (schemas/serve.schema.json).</summary>
    public sealed class WarmWorker : IDisposable
    {
        readonly Process process;
        public string ReadyLine { get; private set; }

        public WarmWorker(IList<string> argv, string workingDirectory = null)
        {
            var full = new List<string>(argv) { "--serve" };
            process = new Process { StartInfo = WorkerClient.StartInfo(full, workingDirectory) };
            process.ErrorDataReceived += (sender, e) => { };  // drained and dropped; a real host would log it
            process.Start();
            process.BeginErrorReadLine();
            ReadyLine = process.StandardOutput.ReadLine();
        }

        /// <summary>Send one request line (a JSON object) and read its one response line.</summary>
        public string Request(string requestJson)
        {
            // Write UTF-8 bytes ourselves: StandardInput's encoding is the platform default on .NET Framework.
            var bytes = Encoding.UTF8.GetBytes(requestJson.Replace("\n", " ") + "\n");
            process.StandardInput.BaseStream.Write(bytes, 0, bytes.Length);
            process.StandardInput.BaseStream.Flush();
            return process.StandardOutput.ReadLine();
        }

        public int Shutdown()
        {
            Request("{\"op\": \"shutdown\", \"id\": \"bye\"}");
            process.StandardInput.Close();
            process.WaitForExit();
            return process.ExitCode;
        }

        public void Dispose()
        {
            if (!process.HasExited) { try { process.Kill(); } catch (InvalidOperationException) { } }
            process.Dispose();
        }
    }
}
