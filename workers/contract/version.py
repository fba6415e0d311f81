"""Contract version: semver, separate from the package version.

Major: incompatible change (a worker refuses args of another major).
Minor: backward-compatible additions (new optional fields, new result fields).
Patch: documentation or schema-text fixes only.

1.1.0: the args schemas carry every rule the workers enforce (enums, patterns, uniqueItems, cross-field
`if`/`then`), args are validated strictly (no type coercion), `describe.schema.json`, `details.cancelled`.
1.2.0: `--describe` may advertise warm mode (`warm`) and the args fields that identify a loaded model
(`model_key_fields`), so a runner can route a request to the warm process that already holds its model.
1.3.0: the `compose` worker; whisper times a known script (`script_path` -> result `script`).
"""

CONTRACT_VERSION = "1.3.0"
CONTRACT_MAJOR = int(CONTRACT_VERSION.split(".")[0])
