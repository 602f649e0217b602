package main

import "testing"

func TestServerAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:7443":                  "127.0.0.1:7443",
		"https://127.0.0.1:7443/":         "127.0.0.1:7443",
		"a:7443,https://b:7443, c:7443":   "a:7443,b:7443,c:7443",
		"https://coffer.example.com:7443": "coffer.example.com:7443",
	} {
		if got, err := serverAddr(in); err != nil || got != want {
			t.Errorf("serverAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "a", "a:1,", "https://a:1/x", "user@a:1"} {
		if _, err := serverAddr(bad); err == nil {
			t.Errorf("serverAddr(%q) accepted", bad)
		}
	}
}
