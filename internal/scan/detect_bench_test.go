package scan

import (
	"testing"

	"coffer/internal/scan/scangen"
)

// BenchmarkDetect runs the rules over one kind of filler at a time.
func BenchmarkDetect(b *testing.B) {
	rs, err := LoadRules()
	if err != nil {
		b.Fatal(err)
	}
	for _, kind := range []string{"python", "javascript", "go", "prose", "logs", "json", "elf", "noise"} {
		data := scangen.Sample(kind, 4<<20, 1)
		bin := isBinary(data)
		b.Run(kind, func(b *testing.B) {
			d := rs.newDetector()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				d.find("x", data, bin)
			}
		})
	}
}
