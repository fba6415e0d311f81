"""Contract version: semver, separate from the package version.

Major: incompatible change (a worker refuses args of another major).
Minor: backward-compatible additions (new optional fields, new result fields).
Patch: documentation or schema-text fixes only.
"""

CONTRACT_VERSION = "1.0.0"
CONTRACT_MAJOR = int(CONTRACT_VERSION.split(".")[0])
