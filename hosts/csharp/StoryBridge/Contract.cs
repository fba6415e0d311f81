// storybridge contract helpers for .NET hosts (C# 6; builds with Mono `mcs` and the .NET 8 SDK).
// The contract's types are generated from schemas/ into Generated/ (generate_types.py); this file holds the
// few rules the schemas cannot express: exit codes per error kind, what is retryable, argv quoting.
using System;
using System.Collections.Generic;
using System.Text;
using Newtonsoft.Json;
using Newtonsoft.Json.Linq;
using StoryBridge.Generated.EnvelopeSchema;

namespace StoryBridge
{
    public static class Contract
    {
        /// <summary>The contract version these types were generated from (schemas/*.schema.json).</summary>
        public const string Version = StoryBridge.Generated.ContractInfo.Version;

        /// <summary>Exit code per error kind (docs/contract.md). 1 or a signal means: crashed, no answer.</summary>
        public static readonly Dictionary<ErrorKind, int> ExitCodes = new Dictionary<ErrorKind, int>
        {
            { ErrorKind.InvalidInput, 2 }, { ErrorKind.ModelUnavailable, 3 }, { ErrorKind.Resource, 4 },
            { ErrorKind.Transient, 5 }, { ErrorKind.External, 6 }, { ErrorKind.Internal, 7 },
        };

        /// <summary>The kind as the contract spells it (`invalid_input`), from the generated enum.</summary>
        public static string KindName(ErrorKind kind)
        {
            return JsonConvert.SerializeObject(kind, Converter.Settings).Trim('"');
        }

        /// <summary>The worker-specific result as a generated type: `envelope.ResultAs(WhisperResult.FromJson)`.</summary>
        public static T ResultAs<T>(this Envelope envelope, Func<string, T> fromJson) where T : class
        {
            if (envelope == null || envelope.Result == null) return null;
            return fromJson(JsonConvert.SerializeObject(envelope.Result));
        }

        /// <summary>Args JSON from a generated args type's `ToJson()`, without the members left null. quicktype
        /// writes unset nullable members as explicit nulls, and for some fields null means "off", not "default".</summary>
        public static string ArgsJson(string generatedJson)
        {
            var doc = JObject.Parse(generatedJson);
            DropNulls(doc);
            return doc.ToString(Formatting.None);
        }

        static void DropNulls(JToken token)
        {
            var obj = token as JObject;
            if (obj != null)
            {
                foreach (var property in new List<JProperty>(obj.Properties()))
                {
                    if (property.Value.Type == JTokenType.Null) property.Remove();
                    else DropNulls(property.Value);
                }
            }
            var array = token as JArray;
            if (array != null) foreach (var item in array) DropNulls(item);
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

        /// <summary>Parse a JSON object, or null when the text is not one (a host must survive a bad line).</summary>
        public static JObject TryParseObject(string line)
        {
            try { return JObject.Parse(line); }
            catch (JsonException) { return null; }
        }
    }
}
