package scan

import (
	"path"
	"regexp"
	"strings"
)

// pathClass is what a file's path says about its content.
type pathClass struct {
	test, docs, template, vendored, library bool
}

func (c pathClass) reasons() []reason {
	var rs []reason
	if c.test {
		rs = append(rs, reasonTest)
	}
	if c.docs {
		rs = append(rs, reasonDocs)
	}
	if c.template {
		rs = append(rs, reasonTemplate)
	}
	if c.vendored && !c.test && !c.docs && !c.template {
		rs = append(rs, reasonVendored)
	}
	if c.library {
		rs = append(rs, reasonLibrary)
	}
	return rs
}

var (
	testDirs = set("test", "tests", "testing", "testdata", "test-data", "test_data", "__tests__", "fixtures",
		"fixture", "__fixtures__", "spec", "specs", "__mocks__", "mocks", "e2e", "testcases", "unittests", "__snapshots__")
	docDirs  = set("doc", "docs", "documentation", "man", "examples", "example", "samples", "sample", "demo", "demos")
	docExts  = set(".md", ".markdown", ".mdx", ".rst", ".adoc", ".asciidoc", ".pod", ".texi", ".texinfo", ".mo", ".po", ".pot")
	docNames = []string{"readme", "changelog", "changes", "history", "news", "install", "contributing", "pkg-info",
		"upgrading", "faq", "authors"}
	templateMarks = []string{".example", ".sample", ".template", ".tmpl", ".dist"}
	vendorDirs    = set("node_modules", "site-packages", "dist-packages", "vendor", "gems", "bower_components",
		"jspm_packages", "third_party", "third-party")
)

// sharedLibrary matches the names of shared and static libraries, which
// carry the test vectors of their self-tests.
var sharedLibrary = regexp.MustCompile(`\.(?:so(?:\.\d+)*|a|dll|dylib)$`)

func set(ws ...string) map[string]bool {
	m := make(map[string]bool, len(ws))
	for _, w := range ws {
		m[w] = true
	}
	return m
}

// Words of a path element or file name (split at '-', '_', '.' and
// camelCase) that mark tests and fixtures, documentation, and examples.
var (
	testWords     = set("test", "tests", "testing", "testdata", "fixture", "fixtures", "mock", "mocks", "e2e", "testfixtures", "testprotos", "testutil", "testutils", "testenv", "testcases", "testsuite", "testresources", "unittest", "unittests")
	docWords      = set("doc", "docs", "example", "examples", "sample", "samples", "demo", "demos", "tutorial", "tutorials", "openapi", "swagger")
	templateWords = set("example", "sample", "template", "tmpl", "insecure", "dummy", "fake")
)

// words splits a path element at '-', '_', '.' and lower-to-upper case
// changes, lower-cased: "keys_test_data.go" is [keys test data go],
// "ThriftTest" is [thrift test].
func words(el string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(el); i++ {
		cut := i == len(el) || el[i] == '-' || el[i] == '_' || el[i] == '.'
		camel := !cut && i > start && el[i] >= 'A' && el[i] <= 'Z' && el[i-1] >= 'a' && el[i-1] <= 'z'
		if cut || camel {
			if i > start {
				out = append(out, strings.ToLower(el[start:i]))
			}
			start = i
			if cut {
				start = i + 1
			}
		}
	}
	return out
}

// classifyPath looks at every element of p, archive members included
// ("lib.jar!/tests/x.properties").
func classifyPath(p string) pathClass {
	var c pathClass
	if strings.HasPrefix(p, "config:") {
		return c
	}
	orig := strings.Split(strings.ReplaceAll(p, "!/", "/"), "/")
	p = strings.ToLower(strings.Join(orig, "/"))
	for _, pre := range []string{"usr/share/doc/", "usr/share/man/", "usr/share/info/", "usr/local/share/man/", "usr/share/gtk-doc/", "usr/share/locale/"} {
		if strings.HasPrefix(p, pre) {
			c.docs = true
		}
	}
	els := strings.Split(p, "/")
	for i, el := range els[:len(els)-1] {
		switch {
		case testDirs[el], strings.HasPrefix(el, "test_"), strings.HasPrefix(el, "tests_"),
			strings.HasSuffix(el, "_test"), strings.HasSuffix(el, "_tests"), strings.HasSuffix(el, "-test"),
			strings.HasSuffix(el, "-tests"):
			c.test = true
		case docDirs[el]:
			c.docs = true
		case vendorDirs[el]:
			c.vendored = true
		}
		for _, w := range words(orig[i]) {
			switch {
			case testWords[w]:
				c.test = true
			case docWords[w]:
				c.docs = true
			}
		}
	}
	base := els[len(els)-1]
	name := strings.TrimSuffix(base, ".gz")
	ext := path.Ext(name)
	stem := strings.TrimSuffix(name, ext)
	switch {
	case strings.HasSuffix(stem, ".spec"), strings.HasSuffix(stem, "_spec"), stem == "conftest", ext == ".snap":
		c.test = true
	}
	for _, w := range words(orig[len(orig)-1]) {
		switch {
		case testWords[w]:
			c.test = true
		case docWords[w] && !templateWords[w]:
			c.docs = true
		}
		if templateWords[w] {
			c.template = true
		}
	}
	if docExts[ext] {
		c.docs = true
	}
	c.library = sharedLibrary.MatchString(name)
	if base == "metadata" && len(els) > 1 && strings.HasSuffix(els[len(els)-2], ".dist-info") {
		c.docs = true // a Python package's README, as installed
	}
	for _, n := range docNames {
		if strings.HasPrefix(name, n) && (len(name) == len(n) || name[len(n)] == '.' || name[len(n)] == '-' || name[len(n)] == '_') {
			c.docs = true
		}
	}
	for _, m := range templateMarks {
		if strings.HasSuffix(name, m) || strings.Contains(name, m+".") {
			c.template = true
		}
	}
	return c
}
