package broker

import (
	"strings"
	"testing"

	cofferv1 "coffer/api/coffer/v1"
)

func TestParseMaxRecv(t *testing.T) {
	for _, tc := range []struct {
		vals []string
		want int
		err  string
	}{
		{nil, cofferv1.DefaultMaxRecv, ""},
		{[]string{"1048576"}, 1 << 20, ""},
		{[]string{"65536"}, cofferv1.MinMaxRecv, ""},
		{[]string{"99999999999999999999999"}, cofferv1.AgentMaxRecv, ""}, // larger than uint64
		{[]string{"1099511627776"}, cofferv1.AgentMaxRecv, ""},
		{[]string{"65535"}, 0, "below the minimum"},
		{[]string{"0"}, 0, "below the minimum"},
		{[]string{""}, 0, "not a decimal"},
		{[]string{"-1"}, 0, "not a decimal"},
		{[]string{"1e9"}, 0, "not a decimal"},
		{[]string{" 1048576"}, 0, "not a decimal"},
		{[]string{"1048576", "1048576"}, 0, "want one"},
	} {
		got, err := cofferv1.ParseMaxRecv(tc.vals)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), cofferv1.MaxRecvKey) {
				t.Errorf("ParseMaxRecv(%q) = %d, %v; want an error naming %s with %q", tc.vals, got, err, cofferv1.MaxRecvKey, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseMaxRecv(%q) = %d, %v; want %d", tc.vals, got, err, tc.want)
		}
	}
}

func FuzzParseMaxRecv(f *testing.F) {
	for _, s := range []string{"", "4194304", "65536", "0", "-5", "18446744073709551616", "12a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := cofferv1.ParseMaxRecv([]string{s})
		if err != nil {
			if n != 0 {
				t.Fatalf("error with a limit %d", n)
			}
			return
		}
		if n < cofferv1.MinMaxRecv || n > cofferv1.AgentMaxRecv {
			t.Fatalf("ParseMaxRecv(%q) = %d, out of range", s, n)
		}
	})
}

// A hostile agent's long container name cannot push its records over the
// audit trail's record size limit (which would keep them out of it).
func TestDeliveryRecordsStayBounded(t *testing.T) {
	long := strings.Repeat("n", 100<<10)
	r := record{d: delivery{agent: "a", action: "delivery.send", err: "too large",
		info: &cofferv1.Container{Id: long, Name: long, Image: long, ImageDigest: long}, f: &cofferv1.FileRef{Secret: "s", Version: 1, File: "f"}}}
	e := r.event()
	if e.Result != "error" || e.Details["error"] != "too large" || e.Details["secret"] != "s" {
		t.Fatalf("record = %+v", e)
	}
	size := 0
	for k, v := range e.Details {
		size += len(k) + len(v)
	}
	if size > 8<<10 {
		t.Fatalf("record details are %d bytes", size)
	}
}
