// A story flow orchestrated from C# without the storybridge runner: narration -> transcript (whisper),
// one keyframe per sentence (sdxl), one clip from the first keyframe (ltx). Args are built with the generated
// types, results read with them; retries follow the contract (RetryPolicy.Default: 0 s, 5 s, 15 s).
//
//   StoryFlow.exe AUDIO SDXL_MODEL LTX_MODEL OUT_DIR [PYTHON]
//
// It prints one JSON report: the sentences, the keyframe paths and the clip path.
using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using System.Text.RegularExpressions;
using System.Threading;
using Newtonsoft.Json.Linq;
using StoryBridge;
using StoryBridge.Generated.WhisperArgsSchema;
using StoryBridge.Generated.WhisperResultSchema;
using SdxlArgs = StoryBridge.Generated.SdxlArgsSchema.SdxlArgs;
using SdxlResult = StoryBridge.Generated.SdxlResultSchema.SdxlResult;
using PromptItem = StoryBridge.Generated.SdxlArgsSchema.PromptItem;
using Prompt = StoryBridge.Generated.SdxlArgsSchema.Prompt;
using SdxlSerialize = StoryBridge.Generated.SdxlArgsSchema.Serialize;
using LtxArgs = StoryBridge.Generated.LtxArgsSchema.LtxArgs;
using LtxResult = StoryBridge.Generated.LtxResultSchema.LtxResult;
using LtxSerialize = StoryBridge.Generated.LtxArgsSchema.Serialize;

public static class StoryFlow
{
    static readonly TimeSpan StepTimeout = TimeSpan.FromMinutes(10);

    /// <summary>Run one step with the contract's retry rules; the last attempt's envelope, or an exception.</summary>
    static WorkerOutcome Step(string python, string worker, string argsJson)
    {
        var argv = new List<string> { python, "-m", "workers." + worker };
        var attempts = WorkerClient.RunWithRetry(argv, argsJson, StepTimeout, RetryPolicy.Default, CancellationToken.None);
        var last = attempts[attempts.Count - 1];
        if (!last.Succeeded)
            throw new InvalidOperationException(worker + " failed after " + attempts.Count + " attempt(s): " + last.Describe());
        return last;
    }

    static List<string> Sentences(string text)
    {
        return Regex.Split(text.Trim(), @"(?<=[.!?])\s+").Where(s => s.Length > 0).ToList();
    }

    public static int Main(string[] args)
    {
        if (args.Length < 4)
        {
            Console.Error.WriteLine("usage: StoryFlow.exe AUDIO SDXL_MODEL LTX_MODEL OUT_DIR [PYTHON]");
            return 64;
        }
        string audio = args[0], sdxlModel = args[1], ltxModel = args[2], outDir = Path.GetFullPath(args[3]);
        string python = args.Length > 4 ? args[4] : "python3";

        var whisperArgs = new WhisperArgs
        {
            AudioPath = audio, Model = "tiny.en", OutputDir = Path.Combine(outDir, "subtitles"),
            Formats = new[] { Format.Srt }, CpuThreads = 2,
        };
        var transcript = Step(python, "whisper", Contract.ArgsJson(whisperArgs.ToJson())).Envelope.ResultAs(WhisperResult.FromJson);
        var sentences = Sentences(transcript.Text);

        var prompts = sentences.Select((s, i) => (Prompt)new PromptItem { Prompt = s, Seed = i, Name = "keyframe_" + i.ToString("D2") });
        var sdxlArgs = new SdxlArgs { Model = sdxlModel, OutputDir = Path.Combine(outDir, "keyframes"), Prompts = prompts.ToArray(), Steps = 2 };
        var keyframes = Step(python, "sdxl", Contract.ArgsJson(SdxlSerialize.ToJson(sdxlArgs))).Envelope.ResultAs(SdxlResult.FromJson);

        var ltxArgs = new LtxArgs
        {
            Model = ltxModel, OutputDir = Path.Combine(outDir, "clip"), Prompt = sentences[0],
            ImagePath = keyframes.Images[0].Path, Width = 32, Height = 32, NumFrames = 9, Fps = 8, Steps = 2, Seed = 0,
        };
        var clip = Step(python, "ltx", Contract.ArgsJson(LtxSerialize.ToJson(ltxArgs))).Envelope.ResultAs(LtxResult.FromJson);

        var report = new JObject
        {
            { "sentences", new JArray(sentences) },
            { "keyframes", new JArray(keyframes.Images.Select(image => image.Path)) },
            { "clip", clip.Path }, { "clip_frames", clip.Frames },
            { "srt", transcript.Files.SrtPath },
        };
        var bytes = Encoding.UTF8.GetBytes(report.ToString(Newtonsoft.Json.Formatting.None) + "\n");
        using (var stdout = Console.OpenStandardOutput()) stdout.Write(bytes, 0, bytes.Length);
        return 0;
    }
}
