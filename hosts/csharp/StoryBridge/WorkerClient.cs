// One-shot worker calls: `argv --input ARGS.json`, one envelope on stdout, retries by the contract's rules.
// What it does for a host: an argv list (never a shell string), the args as a UTF-8 file, stdout and stderr read
// concurrently (a full stderr pipe would otherwise block the worker), exactly one envelope, the exit code as a
// cross-check, the whole process tree killed on timeout or cancellation.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Text;
using System.Threading;
using Newtonsoft.Json;
using StoryBridge.Generated.EnvelopeSchema;

namespace StoryBridge
{
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
#if NETCOREAPP
            for (int i = 1; i < argv.Count; i++) psi.ArgumentList.Add(argv[i]);
#else
            var rest = new List<string>();
            for (int i = 1; i < argv.Count; i++) rest.Add(Contract.QuoteArgument(argv[i]));
            psi.Arguments = string.Join(" ", rest);
#endif
            psi.EnvironmentVariables["PYTHONUTF8"] = "1";
            psi.EnvironmentVariables["PYTHONIOENCODING"] = "utf-8";
            return psi;
        }

        /// <summary>Run with retries: a first attempt, then one retry per policy delay while the outcome says a retry
        /// can help. Returns every attempt (the last one decides). Cancellation cuts a wait short and kills a
        /// running worker's tree.</summary>
        public static List<WorkerOutcome> RunWithRetry(IList<string> argv, string argsJson, TimeSpan timeout,
                                                       RetryPolicy policy, CancellationToken cancel,
                                                       string workingDirectory = null)
        {
            var attempts = new List<WorkerOutcome> { Run(argv, argsJson, timeout, cancel, workingDirectory) };
            foreach (var delay in (policy ?? RetryPolicy.Default).Delays)
            {
                if (!attempts[attempts.Count - 1].ShouldRetry) break;
                if (cancel.WaitHandle.WaitOne(delay) || cancel.IsCancellationRequested) break;
                attempts.Add(Run(argv, argsJson, timeout, cancel, workingDirectory));
            }
            return attempts;
        }

        /// <summary>One job, no retry.</summary>
        public static WorkerOutcome Run(IList<string> argv, string argsJson, TimeSpan timeout,
                                        CancellationToken cancel = default(CancellationToken),
                                        string workingDirectory = null)
        {
            string argsFile = Path.Combine(Path.GetTempPath(), "storybridge-args-" + Guid.NewGuid().ToString("N") + ".json");
            File.WriteAllText(argsFile, argsJson, new UTF8Encoding(false));
            var outcome = new WorkerOutcome { StartedUtc = DateTime.UtcNow };
            var stderr = new StderrLog();
            try
            {
                using (var process = new Process { StartInfo = StartInfo(new List<string>(argv) { "--input", argsFile }, workingDirectory) })
                {
                    process.ErrorDataReceived += (sender, e) => stderr.Add(e.Data);
                    process.Start();
                    process.StandardInput.Close();
                    process.BeginErrorReadLine();  // stderr drains on its own thread: no pipe deadlock
                    var stdoutTask = process.StandardOutput.ReadToEndAsync();
                    bool killed = WaitOrKill(process, timeout, cancel, outcome);
                    process.WaitForExit();  // flushes the async stderr reader
                    outcome.ExitCode = process.ExitCode;
                    // After a kill, a descendant that escaped (no pgrep) could hold stdout open: do not wait on it forever.
                    bool answered = killed ? stdoutTask.Wait(TimeSpan.FromSeconds(5)) : stdoutTask.Wait(-1);
                    ParseEnvelope(answered ? stdoutTask.Result : "", outcome);
                }
            }
            finally
            {
                File.Delete(argsFile);
            }
            outcome.ProgressEvents = stderr.ProgressEvents;
            outcome.Stderr = stderr.Text;
            return outcome;
        }

        /// <summary>Wait for the worker; on timeout or cancellation kill its tree. True when it was killed.</summary>
        static bool WaitOrKill(Process process, TimeSpan timeout, CancellationToken cancel, WorkerOutcome outcome)
        {
            var deadline = DateTime.UtcNow + timeout;
            while (!process.WaitForExit(100))
            {
                if (cancel.IsCancellationRequested) outcome.Cancelled = true;
                else if (DateTime.UtcNow >= deadline) outcome.TimedOut = true;
                else continue;
                ProcessTree.Kill(process);
                return true;
            }
            return false;
        }

        internal static void ParseEnvelope(string stdout, WorkerOutcome outcome)
        {
            var lines = new List<string>();
            foreach (var line in stdout.Split('\n')) if (line.Trim().Length > 0) lines.Add(line);
            if (lines.Count != 1)
            {
                outcome.ProtocolError = lines.Count == 0 ? "no answer on stdout" : "more than one line on stdout";
                return;
            }
            outcome.Envelope = TryParseEnvelope(lines[0], outcome);
            var env = outcome.Envelope;
            if (env == null || outcome.TimedOut || outcome.Cancelled) return;
            int expected = env.Success ? 0 : (env.Error != null ? Contract.ExitCodes[env.Error.Kind] : -1);
            if (expected != outcome.ExitCode)
                outcome.ProtocolError = "exit code " + outcome.ExitCode + " does not match the envelope (expected " + expected + ")";
        }

        internal static Envelope TryParseEnvelope(string line, WorkerOutcome outcome)
        {
            try
            {
                return Envelope.FromJson(line);
            }
            catch (JsonException e)
            {
                outcome.ProtocolError = "not an envelope: " + e.Message;
                return null;
            }
        }
    }

    /// <summary>A worker's stderr: kept for diagnostics, progress events counted.</summary>
    internal class StderrLog
    {
        readonly StringBuilder text = new StringBuilder();
        int progress;

        public void Add(string line)
        {
            if (line == null) return;
            lock (text)
            {
                text.AppendLine(line);
                if (line.StartsWith("{\"event\":\"progress\"") || line.StartsWith("{\"event\": \"progress\"")) progress++;
            }
        }

        public string Text { get { lock (text) return text.ToString(); } }
        public int ProgressEvents { get { lock (text) return progress; } }
    }
}
