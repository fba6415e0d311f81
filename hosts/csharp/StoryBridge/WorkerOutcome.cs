// What one worker call ended as, and whether a retry can help (docs/contract.md, "Retries").
using System;
using StoryBridge.Generated.EnvelopeSchema;

namespace StoryBridge
{
    public class WorkerOutcome
    {
        public DateTime StartedUtc;
        public int ExitCode;
        public bool TimedOut;
        public bool Cancelled;
        public Envelope Envelope;          // null when the worker died without an answer
        public string ProtocolError;       // why there is no usable envelope (or why it disagrees with the exit code)
        public int ProgressEvents;
        public string Stderr;

        public bool Succeeded { get { return Envelope != null && Envelope.Success; } }

        /// <summary>Retry only what a retry can help: the worker's word (never for invalid_input), a crash, a timeout.</summary>
        public bool ShouldRetry
        {
            get
            {
                if (Cancelled) return false;
                if (Envelope != null && !Envelope.Success && Envelope.Error != null)
                    return Envelope.Error.Kind != ErrorKind.InvalidInput && Envelope.Error.Retryable;
                return TimedOut || (Envelope == null && ExitCode != 0);
            }
        }

        public string Describe()
        {
            if (Succeeded) return "success";
            if (Envelope != null && Envelope.Error != null)
                return Contract.KindName(Envelope.Error.Kind) + ": " + Envelope.Error.Message;
            if (TimedOut) return "timed out";
            if (Cancelled) return "cancelled";
            return ProtocolError ?? ("exit code " + ExitCode);
        }
    }

    /// <summary>When to try again: the wait before each retry (so Delays.Length + 1 attempts in all). The seeds'
    /// schedule by default, the same as the runner's (docs/runner.md): 4 attempts.</summary>
    public class RetryPolicy
    {
        public TimeSpan[] Delays { get; set; }

        public RetryPolicy(params TimeSpan[] delays) { Delays = delays; }

        /// <summary>Retry immediately, then after 5 s, then after 15 s.</summary>
        public static RetryPolicy Default
        {
            get { return new RetryPolicy(TimeSpan.Zero, TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(15)); }
        }

        public static RetryPolicy Never { get { return new RetryPolicy(); } }
    }
}
