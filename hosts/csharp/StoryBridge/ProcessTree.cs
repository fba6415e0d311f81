// Killing a worker and everything it started. .NET 5+ has Process.Kill(true); on .NET Framework / Mono a host
// must find the descendants itself: `pgrep -P` (argv list, never a shell) walked down the tree, then SIGKILL.
using System;
using System.Collections.Generic;
using System.Diagnostics;

namespace StoryBridge
{
    public static class ProcessTree
    {
        /// <summary>Kill the process and all its descendants; safe to call on a process that already exited.</summary>
        public static void Kill(Process process)
        {
#if NETCOREAPP
            try { process.Kill(true); } catch (InvalidOperationException) { }
#else
            var descendants = Environment.OSVersion.Platform == PlatformID.Unix ? Descendants(process.Id) : new List<int>();
            // The worker first, so it cannot start new children while its current ones are killed.
            try { process.Kill(); } catch (InvalidOperationException) { } catch (System.ComponentModel.Win32Exception) { }
            if (descendants.Count > 0)
            {
                var argv = new List<string> { "-KILL" };
                foreach (int pid in descendants) argv.Add(pid.ToString());
                RunQuietly("kill", argv);
            }
#endif
        }

        /// <summary>Every process below pid, parents before children (a snapshot via `pgrep -P`).</summary>
        public static List<int> Descendants(int pid)
        {
            var found = new List<int>();
            var queue = new Queue<int>();
            queue.Enqueue(pid);
            while (queue.Count > 0)
            {
                string children = RunQuietly("pgrep", new List<string> { "-P", queue.Dequeue().ToString() });
                foreach (var line in children.Split('\n'))
                {
                    int child;
                    if (int.TryParse(line.Trim(), out child) && !found.Contains(child)) { found.Add(child); queue.Enqueue(child); }
                }
            }
            return found;
        }

        static string RunQuietly(string tool, IList<string> args)
        {
            var psi = new ProcessStartInfo
            {
                FileName = tool, UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true,
                Arguments = string.Join(" ", args),  // pids and flags only: nothing to quote
            };
            try
            {
                using (var p = Process.Start(psi))
                {
                    string stdout = p.StandardOutput.ReadToEnd();
                    p.StandardError.ReadToEnd();
                    p.WaitForExit();
                    return stdout;
                }
            }
            catch (System.ComponentModel.Win32Exception)
            {
                return "";  // tool missing: the worker itself is still killed
            }
        }
    }
}
