// Warm workers keyed by worker argv + model: a host reuses one `--serve` process per model, gets a fresh one
// when the old one died, and shuts down those idle longer than IdleTimeout (call ShutdownIdle from a timer).
using System;
using System.Collections.Generic;
using System.Threading;

namespace StoryBridge
{
    public sealed class WarmPool : IDisposable
    {
        readonly Dictionary<string, WarmWorker> workers = new Dictionary<string, WarmWorker>();
        readonly object gate = new object();
        readonly Timer idleTimer;
        public TimeSpan IdleTimeout { get; private set; }
        public int Started { get; private set; }

        /// <summary>idleTimeout: how long a worker may sit unused; the pool checks every idleTimeout / 2.</summary>
        public WarmPool(TimeSpan idleTimeout)
        {
            IdleTimeout = idleTimeout;
            var period = TimeSpan.FromMilliseconds(Math.Max(50, idleTimeout.TotalMilliseconds / 2));
            idleTimer = new Timer(state => ShutdownIdle(), null, period, period);
        }

        static string Key(IList<string> argv, string modelKey)
        {
            return string.Join("\u0000", argv) + "\u0001" + modelKey;
        }

        /// <summary>The warm worker for this worker + model: reused while alive, started (again) otherwise.</summary>
        public WarmWorker Get(IList<string> argv, string modelKey, string workingDirectory = null)
        {
            lock (gate)
            {
                string key = Key(argv, modelKey);
                WarmWorker worker;
                if (workers.TryGetValue(key, out worker) && worker.IsAlive) return worker;
                if (worker != null) worker.Dispose();
                worker = new WarmWorker(argv, workingDirectory);
                workers[key] = worker;
                Started++;
                return worker;
            }
        }

        public WorkerOutcome Run(IList<string> argv, string modelKey, string argsJson, TimeSpan timeout,
                                 CancellationToken cancel = default(CancellationToken))
        {
            return Get(argv, modelKey).Run(argsJson, timeout, cancel);
        }

        public int Count { get { lock (gate) return workers.Count; } }

        /// <summary>Shut down workers unused for IdleTimeout or longer; returns how many.</summary>
        public int ShutdownIdle()
        {
            var idle = new List<WarmWorker>();
            lock (gate)
            {
                foreach (var entry in new List<KeyValuePair<string, WarmWorker>>(workers))
                {
                    if (DateTime.UtcNow - entry.Value.LastUsedUtc < IdleTimeout) continue;
                    idle.Add(entry.Value);
                    workers.Remove(entry.Key);
                }
            }
            foreach (var worker in idle) { worker.Shutdown(); worker.Dispose(); }
            return idle.Count;
        }

        public void Dispose()
        {
            idleTimer.Dispose();
            lock (gate)
            {
                foreach (var worker in workers.Values) { worker.Shutdown(); worker.Dispose(); }
                workers.Clear();
            }
        }
    }
}
