package scangen

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
)

// Filler is what an image is mostly made of: code that talks about
// passwords and tokens without holding any, binaries, data and archives.
type filler struct {
	r *rand.Rand
	f forge
}

var idents = strings.Fields(`request response session user account client server config settings handler
manager service router cache queue worker token password secret credential auth login logout
header payload buffer stream reader writer parser encoder decoder context options params result
error status message record entry index value key name path url host port timeout retry limit
batch offset cursor page item items data meta schema table column query filter order group`)

var pyLines = []string{
	"import os",
	"import logging",
	"from typing import Optional",
	"logger = logging.getLogger(__name__)",
	"def get_%s(self, %s=None):",
	"    \"\"\"Return the %s for the current %s.\"\"\"",
	"    if not %s:",
	"        raise ValueError(\"%s is required\")",
	"    return self._%s.get(%s)",
	"class %sManager(object):",
	"    def __init__(self, %s, %s=None):",
	"        self.%s = %s",
	"    password = kwargs.pop(\"password\", None)",
	"    token = request.headers.get(\"Authorization\")",
	"    api_key = os.environ.get(\"API_KEY\")",
	"    secret = settings.SECRET_KEY",
	"    self.password_hash = make_password(password)",
	"    token_url = \"https://oauth2.googleapis.com/token\"",
	"    # TODO: rotate the token when the session expires",
	"    password_field = forms.CharField(widget=forms.PasswordInput)",
	"    if check_password(raw_password, self.password):",
	"    access_token = response.json()[\"access_token\"]",
	"    for %s in %s:",
	"        %s.append(%s)",
	"    except KeyError as exc:",
	"        logger.warning(\"missing %s: %%s\", exc)",
	"    secret_name = \"db-credentials\"",
	"    max_tokens = 4096",
	"    token_type = \"bearer\"",
	"",
}

var jsLines = []string{
	"'use strict';",
	"const %s = require('%s');",
	"function %s(%s, %s) {",
	"  if (!%s) { throw new Error('%s missing'); }",
	"  return %s.%s(%s);",
	"}",
	"module.exports = { %s, %s };",
	"  const password = options.password || process.env.DB_PASSWORD;",
	"  const token = req.headers['x-auth-token'];",
	"  this.apiKey = config.apiKey;",
	"  headers: { Authorization: `Bearer ${token}` },",
	"  secret: process.env.SESSION_SECRET,",
	"  // the token is refreshed by the interceptor",
	"  const %s = await %s.%s({ %s });",
	"  passwordMinLength: 12,",
	"",
}

var goLines = []string{
	"package %s",
	"import \"context\"",
	"func (c *%s) %s(ctx context.Context, %s string) error {",
	"\tif %s == \"\" {",
	"\t\treturn fmt.Errorf(\"%s: empty\")",
	"\t}",
	"\treturn c.%s.%s(ctx, %s)",
	"}",
	"\tPassword string `json:\"password\"`",
	"\ttoken := r.Header.Get(\"Authorization\")",
	"\tsecret, err := c.store.Get(ctx, name)",
	"\tAPIKey: os.Getenv(\"API_KEY\"),",
	"",
}

var words = strings.Fields(`the a of to in is for with on that by this be are from as it at or an
install configure run build image container layer secret token password file directory option value
default example note see also version release change fix support use user server client request`)

func (g *filler) ident() string { return idents[g.r.IntN(len(idents))] }

// code renders size bytes of source code from line templates.
func (g *filler) code(lines []string, size int) []byte {
	var b bytes.Buffer
	b.Grow(size + 128)
	for b.Len() < size {
		l := lines[g.r.IntN(len(lines))]
		n := strings.Count(l, "%s") - strings.Count(l, "%%s")
		args := make([]any, n)
		for i := range args {
			args[i] = g.ident()
		}
		fmt.Fprintf(&b, l+"\n", args...)
	}
	return b.Bytes()
}

// prose renders documentation-like text.
func (g *filler) prose(size int) []byte {
	var b bytes.Buffer
	b.Grow(size + 64)
	for b.Len() < size {
		n := 6 + g.r.IntN(14)
		for i := range n {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(words[g.r.IntN(len(words))])
		}
		b.WriteString(".\n")
		if g.r.IntN(8) == 0 {
			b.WriteString("\n")
		}
	}
	return b.Bytes()
}

// logs renders application log lines.
func (g *filler) logs(size int) []byte {
	var b bytes.Buffer
	levels := []string{"INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"}
	for b.Len() < size {
		fmt.Fprintf(&b, "2024-03-%02d %02d:%02d:%02d %s [%s] %s %s completed in %dms request_id=%s\n",
			1+g.r.IntN(28), g.r.IntN(24), g.r.IntN(60), g.r.IntN(60), levels[g.r.IntN(len(levels))],
			g.ident(), g.ident(), g.ident(), g.r.IntN(900), g.f.uuid())
	}
	return b.Bytes()
}

// jsonData renders records with ids, checksums and timestamps.
func (g *filler) jsonData(size int) []byte {
	var b bytes.Buffer
	b.WriteString("[\n")
	for b.Len() < size {
		fmt.Fprintf(&b, "  {\"id\": %q, \"%s\": %q, \"sha256\": %q, \"count\": %d},\n",
			g.f.uuid(), g.ident(), g.ident(), g.f.hex(64), g.r.IntN(1e6))
	}
	b.WriteString("  {}\n]\n")
	return b.Bytes()
}

// elf renders a binary: an ELF header, machine-code-like bytes (skewed, as
// real code is) and a string table; embed lands NUL-terminated in the table.
func (g *filler) elf(size int, embed ...string) []byte {
	b := make([]byte, 0, size+256)
	hdr := make([]byte, 64)
	copy(hdr, "\x7fELF\x02\x01\x01")
	binary.LittleEndian.PutUint16(hdr[16:], 2)    // ET_EXEC
	binary.LittleEndian.PutUint16(hdr[18:], 0x3e) // x86-64
	b = append(b, hdr...)
	code := size * 3 / 4
	common := []byte{0x48, 0x89, 0x8b, 0xe8, 0x00, 0x0f, 0x85, 0xc3, 0x41, 0xff, 0x24, 0x10}
	for len(b) < code {
		if g.r.IntN(3) == 0 {
			b = append(b, byte(g.r.UintN(256)))
		} else {
			b = append(b, common[g.r.IntN(len(common))])
		}
	}
	pos := g.r.IntN(40)
	i := 0
	for len(b) < size {
		if i == pos {
			for _, e := range embed {
				b = append(b, e...)
				b = append(b, 0)
			}
		}
		i++
		s := g.ident()
		switch g.r.IntN(4) {
		case 0:
			s = "error: " + s + " %s"
		case 1:
			s = s + "_" + g.ident()
		}
		b = append(b, s...)
		b = append(b, 0)
	}
	if i <= pos {
		for _, e := range embed {
			b = append(b, e...)
			b = append(b, 0)
		}
	}
	return b
}

// noise is incompressible data: images, fonts, compiled assets.
func (g *filler) noise(size int) []byte {
	b := g.f.bytes(size)
	copy(b, "\x89PNG\r\n\x1a\n")
	return b
}

func gz(data []byte) []byte {
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestSpeed)
	_, _ = zw.Write(data)
	_ = zw.Close()
	return b.Bytes()
}

// zipOf packs files (name, content) in a zip (jar, war).
func zipOf(files ...[2][]byte) []byte {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, f := range files {
		w, _ := zw.Create(string(f[0]))
		_, _ = w.Write(f[1])
	}
	_ = zw.Close()
	return b.Bytes()
}

// tarOf packs files (name, content) in a tar.
func tarOf(files ...[2][]byte) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, f := range files {
		_ = tw.WriteHeader(&tar.Header{Name: string(f[0]), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(f[1]))})
		_, _ = tw.Write(f[1])
	}
	_ = tw.Close()
	return b.Bytes()
}

// Sample returns size bytes of one kind of filler: python, javascript, go,
// prose, logs, json, elf or noise. Benchmarks use it to time rules by input.
func Sample(kind string, size int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 0xC0FFEE))
	g := &filler{r: r, f: forge{r}}
	switch kind {
	case "python":
		return g.code(pyLines, size)
	case "javascript":
		return g.code(jsLines, size)
	case "go":
		return g.code(goLines, size)
	case "prose":
		return g.prose(size)
	case "logs":
		return g.logs(size)
	case "json":
		return g.jsonData(size)
	case "elf":
		return g.elf(size)
	}
	return g.noise(size)
}

func zlibOf(data []byte) []byte {
	var b bytes.Buffer
	zw, _ := zlib.NewWriterLevel(&b, zlib.BestSpeed)
	_, _ = zw.Write(data)
	_ = zw.Close()
	return b.Bytes()
}

var rubyLines = []string{
	"# frozen_string_literal: true",
	"require '%s'",
	"module %s",
	"class %sController < ApplicationController",
	"  before_action :authenticate_%s!",
	"  def %s",
	"    @%s = %s.find(params[:%s])",
	"  end",
	"end",
	"    password = params.require(:user).permit(:password)[:password]",
	"    token = request.headers['Authorization']&.split(' ')&.last",
	"    secret = Rails.application.credentials.secret_key_base",
	"    api_key = ENV.fetch('API_KEY', nil)",
	"    validates :password, length: { minimum: 12 }",
	"    has_secure_password",
	"",
}

var javaLines = []string{
	"package com.corp.%s;",
	"import org.springframework.beans.factory.annotation.Value;",
	"public class %sService {",
	"    private final %sRepository %s;",
	"    @Value(\"${app.%s.password}\")",
	"    private String password;",
	"    @Value(\"${app.%s.token:}\")",
	"    private String token;",
	"    public %s get%s(String %s) {",
	"        return %s.findById(%s).orElseThrow();",
	"    }",
	"}",
	"        String secret = System.getenv(\"APP_SECRET\");",
	"        if (password == null || password.isEmpty()) {",
	"",
}
