package keystore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"coffer/internal/secret"
)

func TestPick(t *testing.T) {
	item := []byte(`{"password":"p\u00e4ss\"\\\n\/x","port":5432,"tls":true,"nested":{"a": [1, 2]},"nil":null,"empty":"","k#":"hash","emoji":"\ud83d\ude00"}`)
	for _, tc := range []struct{ key, want string }{
		{"password", "päss\"\\\n/x"},
		{"port", "5432"},
		{"tls", "true"},
		{"nested", `{"a":[1,2]}`},
		{"empty", ""},
		{"k#", "hash"},
		{"emoji", "😀"},
	} {
		got, err := Pick(item, tc.key)
		if err != nil || string(got) != tc.want {
			t.Errorf("Pick(%q) = %q, %v; want %q", tc.key, string(got), err, tc.want)
		}
	}
	for _, key := range []string{"missing", "nil", "Password"} {
		if _, err := Pick(item, key); !errors.Is(err, ErrNoKey) {
			t.Errorf("Pick(%q): err = %v, want ErrNoKey", key, err)
		}
	}
}

func TestPickNotAnObjectNeverQuotesTheItem(t *testing.T) {
	for _, item := range []string{"hunter2-secret", `"hunter2-secret"`, `["hunter2-secret"]`, `{"a":hunter2-secret}`, `null`, ``, `{"a":"hunter2-secret"`} {
		_, err := Pick([]byte(item), "a")
		if !errors.Is(err, ErrNoKey) {
			t.Errorf("Pick(%q): err = %v, want ErrNoKey", item, err)
			continue
		}
		if strings.Contains(err.Error(), "hunter") || strings.Contains(err.Error(), "'h'") {
			t.Errorf("error reveals the item: %v", err)
		}
	}
}

func TestFetch(t *testing.T) {
	ks := &oneItem{value: []byte(`{"user":"app","password":"s3cret"}`)}
	it, err := Fetch(context.Background(), ks, Ref{Upstream: "up", Item: "db", Key: "password"})
	if err != nil || string(it.Value) != "s3cret" || it.Version != "7" {
		t.Fatalf("Fetch = %+v, %v", it, err)
	}
	if !bytes.Equal(ks.last, make([]byte, len(ks.last))) {
		t.Error("Fetch did not zero the whole item after picking a key")
	}
	_, err = Fetch(context.Background(), ks, Ref{Upstream: "up", Item: "db", Key: "nope"})
	var ke *Error
	if !errors.As(err, &ke) || ke.Upstream != "up" || ke.Item != "db" || !errors.Is(err, ErrNoKey) || !Gone(err) {
		t.Fatalf("Fetch missing key: %v", err)
	}
	if want := `keystore up: item "db": no such key: #nope: the item has no key "nope" (it has 2 keys)`; err.Error() != want {
		t.Errorf("error = %q\nwant    %q", err, want)
	}
}

type oneItem struct{ value, last []byte }

func (o *oneItem) ValidateItem(string) error { return nil }
func (o *oneItem) Read(context.Context, string) (Item, error) {
	o.last = bytes.Clone(o.value)
	return Item{Version: "7", Value: secret.Value(o.last)}, nil
}
func (o *oneItem) Check(context.Context, []string) (map[string]State, error) { return nil, nil }
func (o *oneItem) Close() error                                              { return nil }

func TestCanonicalObject(t *testing.T) {
	var obj map[string]json.RawMessage
	json.Unmarshal([]byte(`{"b":"x\u003cy","a":1.50, "c":{"z" : true}, "d":"\u00e4\n"}`), &obj)
	got, err := CanonicalObject(obj)
	if want := "{\"a\":1.50,\"b\":\"x<y\",\"c\":{\"z\":true},\"d\":\"ä\\n\"}"; err != nil || string(got) != want {
		t.Errorf("CanonicalObject = %s, %v; want %s", got, err, want)
	}
}

// FuzzPick checks Pick against encoding/json: for every JSON object and key,
// Pick returns what json.Unmarshal makes of the value (strings unescaped the
// same way), and never panics.
func FuzzPick(f *testing.F) {
	f.Add([]byte(`{"a":"b"}`), "a")
	f.Add([]byte(`{"a":"\ud800\u0041","b":"\xff"}`), "a")
	f.Add([]byte(`{"a":"\ud83d\ude00\\\"\/\b\f\n\r\t"}`), "a")
	f.Add([]byte(`{"a":{"x":[1,2,{"y":null}]}}`), "a")
	f.Add([]byte(`not json`), "a")
	f.Fuzz(func(t *testing.T, item []byte, key string) {
		got, err := Pick(item, key)
		var obj map[string]any
		if json.Unmarshal(item, &obj) != nil || obj == nil {
			if err == nil {
				t.Fatal("Pick accepted what encoding/json refuses")
			}
			return
		}
		v, ok := obj[key]
		if !ok || v == nil {
			if !errors.Is(err, ErrNoKey) {
				t.Fatalf("err = %v, want ErrNoKey", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		switch v := v.(type) {
		case string:
			if string(got) != v {
				t.Fatalf("Pick = %q, encoding/json = %q", got, v)
			}
		default:
			var back any
			if json.Unmarshal(got, &back) != nil {
				t.Fatalf("Pick returned invalid JSON %q", got)
			}
		}
		// Strings round-trip through AppendQuote.
		if s, ok := v.(string); ok {
			var back string
			if json.Unmarshal(AppendQuote(nil, []byte(s)), &back) != nil || back != s {
				t.Fatalf("AppendQuote(%q) does not round-trip", s)
			}
		}
	})
}
