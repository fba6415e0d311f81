// Warm mode: one `--serve` worker process, JSON-lines requests on stdin and one response line each on stdout
// (schemas/serve.schema.json). A request that times out, or is cancelled, kills the worker's whole tree and
// starts a fresh one: the old process may still be busy with the request, so it cannot be trusted with the next.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using Newtonsoft.Json.Linq;
using StoryBridge.Generated.ServeMessageSchema;

namespace StoryBridge
{
    public sealed class WarmWorker : IDisposable
    {
        readonly List<string> argv;
        readonly string workingDirectory;
        readonly TimeSpan startTimeout;
        readonly object gate = new object();
        Process process;
        StderrLog stderr;
        int requests;

        public ServeMessage Ready { get; private set; }
        public string ReadyLine { get; private set; }
        public int Restarts { get; private set; }
        public DateTime LastUsedUtc { get; private set; }
        public int Pid { get { return process.Id; } }
        public bool IsAlive { get { return process != null && !process.HasExited; } }
        public string Stderr { get { return stderr.Text; } }

        public WarmWorker(IList<string> argv, string workingDirectory = null, TimeSpan? startTimeout = null)
        {
            this.argv = new List<string>(argv) { "--serve" };
            this.workingDirectory = workingDirectory;
            this.startTimeout = startTimeout ?? TimeSpan.FromMinutes(2);
            Start();
        }

        void Start()
        {
            stderr = new StderrLog();
            process = new Process { StartInfo = WorkerClient.StartInfo(argv, workingDirectory) };
            process.ErrorDataReceived += (sender, e) => stderr.Add(e.Data);
            process.Start();
            process.BeginErrorReadLine();
            LastUsedUtc = DateTime.UtcNow;
            ReadyLine = ReadLine(startTimeout, CancellationToken.None);
            if (ReadyLine == null) { ProcessTree.Kill(process); throw new InvalidOperationException("warm worker sent no ready line: " + stderr.Text); }
            Ready = ServeMessage.FromJson(ReadyLine);
        }

        void Restart()
        {
            ProcessTree.Kill(process);
            process.WaitForExit();
            process.Dispose();
            Restarts++;
            Start();
        }

        /// <summary>Run one job on the warm worker. A dead worker is restarted first.</summary>
        public WorkerOutcome Run(string argsJson, TimeSpan timeout, CancellationToken cancel = default(CancellationToken))
        {
            lock (gate)
            {
                if (!IsAlive) Restart();
                string id = "r" + Interlocked.Increment(ref requests);
                var outcome = new WorkerOutcome { StartedUtc = DateTime.UtcNow };
                string line = Exchange("{\"id\": \"" + id + "\", \"args\": " + argsJson + "}", timeout, cancel, outcome);
                if (line != null)
                {
                    outcome.Envelope = WorkerClient.TryParseEnvelope(line, outcome);
                    var echoed = Contract.TryParseObject(line);
                    if (echoed != null && (string)echoed["id"] != id) outcome.ProtocolError = "response id does not match request " + id;
                }
                return outcome;
            }
        }

        /// <summary>Send one raw line (ping, shutdown, or anything) and return the raw response line.</summary>
        public string Request(string requestJson, TimeSpan? timeout = null)
        {
            lock (gate)
            {
                var outcome = new WorkerOutcome();
                return Exchange(requestJson, timeout ?? TimeSpan.FromSeconds(30), CancellationToken.None, outcome);
            }
        }

        string Exchange(string requestJson, TimeSpan timeout, CancellationToken cancel, WorkerOutcome outcome)
        {
            LastUsedUtc = DateTime.UtcNow;
            // Write UTF-8 bytes ourselves: StandardInput's encoding is the platform default on .NET Framework.
            var bytes = Encoding.UTF8.GetBytes(requestJson.Replace("\n", " ") + "\n");
            try
            {
                process.StandardInput.BaseStream.Write(bytes, 0, bytes.Length);
                process.StandardInput.BaseStream.Flush();
            }
            catch (System.IO.IOException) { }  // died before reading: the read below sees end of stream
            string line = ReadLine(timeout, cancel);
            LastUsedUtc = DateTime.UtcNow;
            if (line != null) return line;
            outcome.Cancelled = cancel.IsCancellationRequested;
            outcome.TimedOut = !outcome.Cancelled && IsAlive;
            outcome.Stderr = stderr.Text;
            if (outcome.TimedOut || outcome.Cancelled) Restart();
            else { process.WaitForExit(); outcome.ExitCode = process.ExitCode; outcome.ProtocolError = "warm worker exited without an answer"; }
            return null;
        }

        /// <summary>The next stdout line, or null on timeout, cancellation or end of stream.</summary>
        string ReadLine(TimeSpan timeout, CancellationToken cancel)
        {
            Task<string> read = process.StandardOutput.ReadLineAsync();
            try
            {
                return read.Wait((int)timeout.TotalMilliseconds, cancel) ? read.Result : null;
            }
            catch (OperationCanceledException)
            {
                return null;
            }
        }

        /// <summary>Ask the worker to exit (exit code 0); kills it when it does not within the timeout.</summary>
        public int Shutdown(TimeSpan? timeout = null)
        {
            lock (gate)
            {
                if (IsAlive)
                {
                    Exchange("{\"op\": \"shutdown\", \"id\": \"bye\"}", timeout ?? TimeSpan.FromSeconds(10), CancellationToken.None, new WorkerOutcome());
                    try { process.StandardInput.Close(); } catch (System.IO.IOException) { }
                    if (!process.WaitForExit((int)(timeout ?? TimeSpan.FromSeconds(10)).TotalMilliseconds)) ProcessTree.Kill(process);
                }
                process.WaitForExit();
                return process.ExitCode;
            }
        }

        public void Dispose()
        {
            if (IsAlive) ProcessTree.Kill(process);
            process.Dispose();
        }
    }
}
