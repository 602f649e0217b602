// Package scan finds secrets baked into container images and directories.
//
// A [Scanner] reads every layer of an image as a tar stream, never unpacking
// it to disk, and hands each regular file to a pool of workers (one per CPU).
// A worker opens archives (tar, tar.gz, zip/jar/war) and single gzip files to
// a depth of two, then runs the detection rules: an Aho-Corasick keyword
// prefilter over the raw bytes picks the rules worth running, and each rule's
// regular expression runs only on the lines (or, in binaries, the printable
// runs) around its keywords. Matches go through entropy, placeholder and
// per-rule checks before they become a [Finding], which carries a redacted
// excerpt and a stable fingerprint but never the secret itself.
//
// Files deleted or overwritten by a later layer are still scanned in the
// layer that added them, and their findings say so. The image config (ENV,
// labels, build history) and git objects are scanned too.
//
// # Confidence
//
// Each finding gets a [Confidence] from its context: test and fixture
// paths, documentation, templates, vendored code, loopback and example
// hosts, well-known defaults, values printed in the package's own
// documentation. Low-confidence findings go to Report.Low, apart from
// Report.Findings; findings of high-signal rules (private keys, cloud key
// pairs, tokens with a valid checksum) never go below medium.
//
// # Rules
//
// The built-in rules live in rules.yaml (embedded); [LoadRules] adds or
// replaces rules from user files of the same shape. See docs/scan.md.
//
// # Concurrency
//
// A [Scanner] is safe for concurrent use; each Scan call has its own state.
package scan
