// Command coffer-scangen writes a labelled test image for coffer scan: a
// `docker save` tarball with synthetic secrets planted in every place
// secrets hide, decoys, and the ground truth next to it (OUT.truth.json).
//
//	coffer-scangen -o small.tar                 # a few MB, for tests
//	coffer-scangen -o big.tar -size large       # ~300 MB, for benchmarks
//	coffer-scangen -o l2.tar -layout 2          # the second layout: another stack, other kinds
//	docker load -i big.tar                      # then: coffer scan image docker://coffer-scangen/test:latest
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"

	"coffer/internal/scan/scangen"
)

func main() {
	out := flag.String("o", "coffer-scangen.tar", "output `file` (docker save format)")
	seed := flag.Uint64("seed", 1, "RNG seed: the same seed gives the same image")
	size := flag.String("size", "small", "filler: small (~3 MB), large (~300 MB) or a number of MB")
	gz := flag.Bool("gzip", false, "gzip the layers")
	tag := flag.String("tag", "coffer-scangen/test:latest", "repo tag recorded in the tarball")
	layout := flag.Int("layout", 1, "1: a Python/JavaScript web app; 2: a JVM, Rails and Node stack with other kinds of secrets")
	flag.Parse()

	var filler int64
	switch *size {
	case "small":
		filler = scangen.SmallFiller
	case "large":
		filler = scangen.LargeFiller
	default:
		mb, err := strconv.Atoi(*size)
		if err != nil || mb <= 0 {
			fmt.Fprintln(os.Stderr, "coffer-scangen: -size wants small, large or a positive number of MB")
			os.Exit(2)
		}
		filler = int64(mb) << 20
	}
	if *layout != 1 && *layout != 2 {
		fmt.Fprintln(os.Stderr, "coffer-scangen: -layout wants 1 or 2")
		os.Exit(2)
	}
	t, err := scangen.WriteFile(*out, scangen.Options{Seed: *seed, Filler: filler, Gzip: *gz, Tag: *tag, Layout: *layout})
	if err != nil {
		fmt.Fprintln(os.Stderr, "coffer-scangen:", err)
		os.Exit(1)
	}
	var total int64
	for _, n := range t.LayerBytes {
		total += n
	}
	fmt.Printf("%s: %d layers, %.1f MB uncompressed, %d secrets of %d kinds, %d decoys; truth in %s.truth.json\n",
		*out, len(t.LayerBytes), float64(total)/1e6, len(t.Secrets), t.Kinds(), len(t.Decoys), *out)
}
