package tmpfs

import (
	"bytes"
	"strconv"

	"github.com/moby/sys/mountinfo"
)

// mountsOfDevice returns the mounts of the filesystem major:minor in the
// mountinfo table mi, or the error, exactly as fullMountsOfDevice would.
//
// A host running many containers has a table of thousands of lines, read
// on every delivery to check that a tmpfs is private (otherNamespaces), and
// parsing every line to keep two or three costs a millisecond. So each line
// is first looked at as raw bytes: one that surely parses (see wellFormed)
// and whose device field is a plain decimal pair other than major:minor is
// a mount the filter would skip, and is passed over; every other line is
// kept and parsed, with the same filter, by the same library call. If any
// line might not parse, or might not fit the library's line buffer, the
// whole table is parsed as before, so a malformed table fails the same way.
func mountsOfDevice(mi []byte, major, minor int) ([]*mountinfo.Info, error) {
	want := strconv.AppendInt(nil, int64(major), 10)
	want = append(want, ':')
	want = strconv.AppendInt(want, int64(minor), 10)

	var kept []byte // the raw lines that may be mounts of major:minor
	for rest := mi; len(rest) > 0; {
		raw := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			raw, rest = rest[:i+1], rest[i+1:]
		} else {
			rest = nil
		}
		if len(raw) > maxLine {
			return fullMountsOfDevice(mi, major, minor)
		}
		dev, ok := wellFormed(scannedLine(raw))
		if !ok {
			return fullMountsOfDevice(mi, major, minor)
		}
		if plainDevice(dev) && !bytes.Equal(dev, want) {
			continue // major:minor is another filesystem
		}
		kept = append(kept, raw...)
	}
	if kept == nil {
		return []*mountinfo.Info{}, nil // what the library returns when it keeps none
	}
	return fullMountsOfDevice(kept, major, minor)
}

// fullMountsOfDevice parses every line of mi, keeping the mounts of
// major:minor: the reference that mountsOfDevice must equal.
func fullMountsOfDevice(mi []byte, major, minor int) ([]*mountinfo.Info, error) {
	return mountinfo.GetMountsFromReader(bytes.NewReader(mi), func(m *mountinfo.Info) (skip, stop bool) {
		return m.Major != major || m.Minor != minor, false
	})
}

// maxLine bounds the raw lines (with their newline) that mountsOfDevice
// looks at itself: well below the 64 KiB the library's bufio.Scanner holds
// (a longer line is its error, left to it), so a kept line always fits.
const maxLine = 32 << 10

// scannedLine is raw (one line with its newline, if any) as bufio.ScanLines
// hands it to the library's parser: without the newline and one carriage
// return before it.
func scannedLine(raw []byte) []byte {
	raw = bytes.TrimSuffix(raw, []byte{'\n'})
	return bytes.TrimSuffix(raw, []byte{'\r'})
}

// wellFormed reports whether the library parses line without an error,
// and returns its third field (major:minor). The library splits the line
// on single spaces and fails unless there are at least 10 fields, the third
// holds a colon, and one of fields 6 to n-4 (from 0, of n) is "-", the
// separator; only then is a line let past unparsed. That is: a field "-"
// after the first six with at least three fields after it (then n >= 10).
func wellFormed(line []byte) (dev []byte, ok bool) {
	// Fields 0 to 2 are short numbers: walked byte by byte.
	spaces, start, k := 0, 0, 0
	for ; k < len(line) && spaces < 3; k++ {
		if line[k] == ' ' {
			spaces++
			if spaces == 2 {
				start = k + 1
			}
		}
	}
	if spaces < 3 {
		return nil, false
	}
	dev = line[start : k-1]
	rest := line[k:]
	for range 3 {
		j := bytes.IndexByte(rest, ' ')
		if j < 0 {
			return nil, false
		}
		rest = rest[j+1:]
	}
	// rest is fields 6 to n-1; find the first that is "-".
	var after []byte
	if len(rest) >= 2 && rest[0] == '-' && rest[1] == ' ' {
		after = rest[2:]
	} else if j := bytes.Index(rest, []byte(" - ")); j >= 0 {
		after = rest[j+3:]
	} else {
		return nil, false
	}
	// Three fields after it: two spaces.
	j := bytes.IndexByte(after, ' ')
	if j < 0 || bytes.IndexByte(after[j+1:], ' ') < 0 {
		return nil, false
	}
	return dev, bytes.IndexByte(dev, ':') >= 0
}

// plainDevice reports whether dev is "major:minor" in plain decimal (no
// sign, no leading zero, at most 9 digits each): the only spelling of its
// pair of numbers, so that comparing the bytes compares the numbers the
// library would read. Any other spelling is parsed, to be judged as before.
func plainDevice(dev []byte) bool {
	major, minor, ok := bytes.Cut(dev, []byte{':'})
	return ok && plainUint(major) && plainUint(minor)
}

func plainUint(b []byte) bool {
	if len(b) == 0 || len(b) > 9 || (b[0] == '0' && len(b) > 1) {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
