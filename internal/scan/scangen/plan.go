package scangen

import (
	"encoding/base64"
	"fmt"
	"path"
	"strings"
)

// Layers of the generated image.
const (
	layerBase    = 0 // OS: binaries, libraries, docs, certificates
	layerDeps    = 1 // site-packages, node_modules, vendor
	layerApp     = 2 // the application, its config, its mistakes
	layerCleanup = 3 // rm -rf of some mistakes, placeholders over others
	layerFinal   = 4 // late additions
)

// plan lays out filler, secrets and decoys over the layers.
func (b *builder) plan() {
	if b.o.Layout == 2 {
		b.plan2()
		return
	}
	total := b.o.Filler
	b.fillBase(total * 30 / 100)
	b.fillDeps(total * 40 / 100)
	b.fillApp(total * 30 / 100)

	b.plantPlain()
	b.plantDotfiles()
	b.plantKeys()
	b.plantDeletedAndOverwritten()
	b.plantArchives()
	b.plantBinaryAndLogs()
	b.plantVendored()
	b.plantConfig()
	b.plantDecoys()
	b.plantNewKinds()
	b.plantNewDecoys()
}

// ---------------------------------------------------------------- filler

func (b *builder) size(mean int) int { return mean/2 + b.r.IntN(mean) }

func (b *builder) fillBase(budget int64) {
	var used int64
	for i := 0; used < budget; i++ {
		var data []byte
		var p string
		switch i % 5 {
		case 0, 1:
			data = b.fill.elf(b.size(min(int(budget/20)+1, 2<<20)))
			p = fmt.Sprintf("usr/bin/%s-%s%d", b.fill.ident(), b.fill.ident(), i)
		case 2:
			data = b.fill.elf(b.size(min(int(budget/30)+1, 1<<20)))
			p = fmt.Sprintf("usr/lib/x86_64-linux-gnu/lib%s.so.%d", b.fill.ident(), i)
		case 3:
			data = b.fill.prose(b.size(16 << 10))
			p = fmt.Sprintf("usr/share/doc/%s/README.%d", b.fill.ident(), i)
		case 4:
			data = gz(b.fill.prose(b.size(24 << 10)))
			p = fmt.Sprintf("usr/share/doc/%s/changelog.%d.gz", b.fill.ident(), i)
		}
		b.add(layerBase, p, data)
		used += int64(len(data))
	}
	b.add(layerBase, "etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n"))
	b.add(layerBase, "etc/os-release", []byte("ID=debian\nVERSION_ID=\"12\"\n"))
}

func (b *builder) fillDeps(budget int64) {
	var used int64
	for i := 0; used < budget; i++ {
		var data []byte
		var p string
		switch i % 6 {
		case 0, 1:
			data = b.fill.code(pyLines, b.size(12<<10))
			p = fmt.Sprintf("usr/lib/python3/site-packages/%s_%s/%s.py", b.fill.ident(), b.fill.ident(), b.fill.ident())
		case 2, 3:
			data = b.fill.code(jsLines, b.size(10<<10))
			p = fmt.Sprintf("app/node_modules/%s-%s/lib/%s.js", b.fill.ident(), b.fill.ident(), b.fill.ident())
		case 4:
			data = b.fill.code(goLines, b.size(14<<10))
			p = fmt.Sprintf("app/vendor/github.com/%s/%s/%s.go", b.fill.ident(), b.fill.ident(), b.fill.ident())
		case 5:
			if b.r.IntN(2) == 0 {
				data = b.fill.jsonData(b.size(20 << 10))
				p = fmt.Sprintf("app/node_modules/%s/package-data.json", b.fill.ident())
			} else {
				// a wheel's compiled extension
				data = b.fill.elf(b.size(min(int(budget/40)+1, 512<<10)))
				p = fmt.Sprintf("usr/lib/python3/site-packages/%s/_speedups.cpython-311-x86_64-linux-gnu.so", b.fill.ident())
			}
		}
		ext := path.Ext(p)
		b.add(layerDeps, fmt.Sprintf("%s_%d%s", strings.TrimSuffix(p, ext), i, ext), data)
		used += int64(len(data))
	}
}

func (b *builder) fillApp(budget int64) {
	var used int64
	for i := 0; used < budget; i++ {
		var data []byte
		var p string
		switch i % 6 {
		case 0:
			data = b.fill.code(pyLines, b.size(8<<10))
			p = fmt.Sprintf("app/src/%s/%s_%d.py", b.fill.ident(), b.fill.ident(), i)
		case 1:
			data = b.fill.logs(b.size(32 << 10))
			p = fmt.Sprintf("var/log/app/%s.log", b.fill.ident())
		case 2:
			data = gz(b.fill.logs(b.size(48 << 10)))
			p = fmt.Sprintf("var/log/app/%s.log.%d.gz", b.fill.ident(), i)
		case 3:
			data = b.fill.noise(b.size(min(int(budget/40)+1, 256<<10)))
			p = fmt.Sprintf("app/static/img/%s_%d.png", b.fill.ident(), i)
		case 4:
			var members [][2][]byte
			for j := range 3 + b.r.IntN(6) {
				members = append(members, [2][]byte{
					fmt.Appendf(nil, "com/corp/%s/%s%d.class", b.fill.ident(), b.fill.ident(), j),
					b.fill.elf(b.size(6 << 10)),
				})
			}
			data = zipOf(members...)
			p = fmt.Sprintf("app/lib/%s-%d.jar", b.fill.ident(), i)
		case 5:
			data = b.fill.jsonData(b.size(16 << 10))
			p = fmt.Sprintf("app/data/%s_%d.json", b.fill.ident(), i)
		}
		b.add(layerApp, p, data)
		used += int64(len(data))
	}
}

// ---------------------------------------------------------------- secrets

func (b *builder) plantPlain() {
	f := b.f
	id, sk := f.awsKeyID(), f.awsSecret()
	creds := "[default]\naws_access_key_id = " + id + "\naws_secret_access_key = " + sk + "\nregion = eu-west-1\n"
	b.secret(layerApp, "root/.aws/credentials", creds, id, "aws-access-key-id", "dotfile")
	b.label(layerApp, "root/.aws/credentials", lineOf(creds, sk), "aws-secret-access-key", "dotfile")

	sa := f.gcpServiceAccount()
	b.add(layerApp, "app/config/gcp-sa.json", []byte(sa))
	b.label(layerApp, "app/config/gcp-sa.json", 5, "gcp-service-account", "plain")

	az := f.azureStorage()
	b.secret(layerApp, "app/config/appsettings.Production.json",
		"{\n  \"Logging\": {\"LogLevel\": {\"Default\": \"Warning\"}},\n  \"Storage\": {\n    \"ConnectionString\": \""+az+"\"\n  }\n}\n",
		az[strings.Index(az, "AccountKey=")+len("AccountKey="):], "azure-storage-key", "plain")

	sb := f.azureServiceBus()
	b.secret(layerApp, "app/config/servicebus.env", "SERVICEBUS_QUEUE=orders\nSERVICEBUS_CONNECTION="+sb+"\n",
		sb[strings.Index(sb, "SharedAccessKey=")+len("SharedAccessKey="):], "azure-shared-access-key", "plain")

	jwt := f.jwt()
	b.secret(layerApp, "app/config/service.yaml", "service:\n  name: billing\n  upstream:\n    url: https://api.corp.internal\n    bearer: "+jwt+"\n", jwt, "jwt", "plain")

	db := f.password()
	conn := "Server=sql.corp.internal;Database=payments;User Id=payments_app;Password=" + db + ";Encrypt=true"
	b.secret(layerApp, "app/config/appsettings.json", "{\n  \"ConnectionStrings\": {\n    \"Payments\": \""+conn+"\"\n  }\n}\n", db, "db-connection-string", "plain")

	amqp := f.password()
	b.secret(layerApp, "app/config/celery.py", "broker_url = 'amqp://worker:"+amqp+"@rabbitmq.corp.internal:5672/prod'\nresult_backend = 'rpc://'\n", amqp, "url-credentials", "plain")

	sg := f.sendgrid()
	b.secret(layerApp, "app/src/notify/mailer.py", b.inCode(pyLines, 4<<10, "SENDGRID_KEY = \""+sg+"\""), sg, "sendgrid-api-key", "plain")

	vt := f.vault()
	b.secret(layerApp, "app/config/vault-agent.hcl", "vault {\n  address = \"https://vault.corp.internal:8200\"\n}\nauto_auth {\n  sink \"file\" {\n    config = { path = \"/tmp/token\" }\n  }\n}\n# bootstrap: "+vt+"\n", vt, "vault-token", "plain")
}

func (b *builder) plantDotfiles() {
	f := b.f
	gl := f.gitlab()
	b.secret(layerApp, "app/.git/config", "[core]\n\trepositoryformatversion = 0\n\tbare = false\n[remote \"origin\"]\n\turl = https://oauth2:"+gl+"@gitlab.corp.internal/team/app.git\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n", gl, "gitlab-token", "dotfile")

	pg := f.password()
	b.secret(layerApp, "root/.pgpass", "# host:port:db:user:password\ndb.corp.internal:5432:payments:payments:"+pg+"\n", pg, "pgpass", "dotfile")

	nr := f.password()
	b.secret(layerApp, "root/.netrc", "machine api.corp.internal\n  login deploy\n  password "+nr+"\n", nr, "netrc-password", "dotfile")

	my := f.password()
	b.secret(layerApp, "root/.my.cnf", "[client]\nuser=root\npassword="+my+"\nhost=db.corp.internal\n", my, "generic-password", "dotfile")

	cc := f.password()
	b.secret(layerApp, "etc/mysql/conf.d/client.cnf", "[client]\nuser = reporting\npassword = \""+cc+"\"\n", cc, "generic-password", "dotfile")

	ht := f.htpasswd()
	b.secret(layerApp, "etc/nginx/.htpasswd", "admin:"+ht+"\n", ht, "password-hash", "dotfile")

	nt := f.pick(b64url, 40)
	b.secret(layerApp, "root/.npmrc", "registry=https://npm.corp.internal/\n//npm.corp.internal/:_authToken="+nt+"\nalways-auth=true\n", nt, "npmrc-auth", "dotfile")

	pp := f.pypi()
	b.secret(layerApp, "root/.pypirc", "[distutils]\nindex-servers = pypi\n\n[pypi]\nusername = __token__\npassword = "+pp+"\n", pp, "pypi-token", "dotfile")

	auth := base64.StdEncoding.EncodeToString([]byte("ci-bot:" + f.password()))
	b.secret(layerApp, "root/.docker/config.json", "{\n  \"auths\": {\n    \"registry.corp.internal\": {\n      \"auth\": \""+auth+"\"\n    }\n  }\n}\n", auth, "docker-config-auth", "dotfile")

	kt := f.pick(b64url, 64)
	ck := base64.StdEncoding.EncodeToString([]byte(f.ecKey()))
	kube := "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://k8s.corp.internal:6443\n  name: prod\nusers:\n- name: ci\n  user:\n    token: " + kt + "\n- name: admin\n  user:\n    client-certificate-data: " + f.b64(300) + "\n    client-key-data: " + ck + "\n"
	b.secret(layerApp, "root/.kube/config", kube, kt, "kubeconfig-token", "dotfile")
	b.label(layerApp, "root/.kube/config", lineOf(kube, ck), "kubeconfig-client-key", "dotfile")

	dh := f.dockerhub()
	b.secret(layerApp, "app/scripts/push.sh", "#!/bin/sh\nset -e\necho \""+dh+"\" | docker login -u corpbot --password-stdin\ndocker push corp/app\n", dh, "dockerhub-token", "plain")
}

func (b *builder) plantKeys() {
	f := b.f
	rsa := f.rsaKey()
	b.secret(layerApp, "app/keys/jwt-signing.pem", rsa, "-----BEGIN RSA", "rsa-private-key", "plain")
	p8 := f.pkcs8()
	b.secret(layerApp, "etc/ssl/private/server.key", p8, "-----BEGIN PRIVATE", "pkcs8-private-key", "plain")
	pgp := f.pgpKey()
	b.secret(layerApp, "root/.gnupg/release-signing.asc", pgp, "-----BEGIN PGP", "pgp-private-key", "dotfile")
	age := f.age()
	b.secret(layerFinal, "app/config/age.key", "# created: 2024-03-01T00:00:00Z\n# public key: age1coffertest\n"+age+"\n", age, "age-secret-key", "plain")
}

func (b *builder) plantDeletedAndOverwritten() {
	f := b.f
	ssh := f.sshKey()
	b.secret(layerApp, "root/.ssh/id_ed25519", ssh, "-----BEGIN OPENSSH", "openssh-private-key", "deleted")
	b.add(layerCleanup, "root/.ssh/.wh.id_ed25519", nil)
	b.status("root/.ssh/id_ed25519", "deleted in layer 3")

	gh := f.github()
	b.secret(layerApp, "tmp/build/secrets.env", "GITHUB_TOKEN="+gh+"\n", gh, "github-token", "deleted-dir")
	b.add(layerCleanup, "tmp/.wh.build", nil)
	b.status("tmp/build/secrets.env", "deleted in layer 3")

	ec := f.ecKey()
	b.secret(layerApp, "srv/certs/tls.key", ec, "-----BEGIN EC", "ec-private-key", "opaque-dir")
	b.add(layerFinal, "srv/certs/.wh..wh..opq", nil)
	b.add(layerFinal, "srv/certs/README", []byte("certificates are mounted at run time\n"))
	b.status("srv/certs/tls.key", "deleted in layer 4")

	pw, st := f.password(), f.stripe()
	env := "APP_ENV=production\nDB_HOST=db.corp.internal\nDB_PASSWORD=" + pw + "\nSTRIPE_API_KEY=" + st + "\n"
	b.secret(layerApp, "app/.env", env, pw, "generic-password", "overwritten")
	b.label(layerApp, "app/.env", lineOf(env, st), "stripe-secret-key", "overwritten")
	b.status("app/.env", "overwritten in layer 3")
	placeholder := "APP_ENV=production\nDB_HOST=db.corp.internal\nDB_PASSWORD=${DB_PASSWORD}\nSTRIPE_API_KEY=<stripe-key>\n"
	b.decoy(layerCleanup, "app/.env", placeholder, "DB_PASSWORD", "placeholder")
}

// status sets the expected status of the labels at path.
func (b *builder) status(path, st string) {
	for i := range b.truth.Secrets {
		if b.truth.Secrets[i].Path == path {
			b.truth.Secrets[i].Status = st
		}
	}
}

func (b *builder) plantArchives() {
	f := b.f
	// tar: a kubeconfig-like token in a backup
	tok := f.slack()
	inner := "# exported settings\nSLACK_BOT_TOKEN=" + tok + "\n"
	b.add(layerApp, "opt/backup/settings.tar", tarOf([2][]byte{[]byte("settings/slack.env"), []byte(inner)}))
	b.label(layerApp, "opt/backup/settings.tar!/settings/slack.env", lineOf(inner, tok), "slack-token", "archive-tar")

	// tar.gz: database URL in a release bundle
	pw := f.password()
	yml := "production:\n  adapter: postgresql\n  url: postgresql://rails:" + pw + "@db.corp.internal:5432/app\n  pool: 10\n"
	b.add(layerApp, "opt/release/app-1.4.2.tar.gz", gz(tarOf(
		[2][]byte{[]byte("app-1.4.2/README"), b.fill.prose(4 << 10)},
		[2][]byte{[]byte("app-1.4.2/config/database.yml"), []byte(yml)},
	)))
	b.label(layerApp, "opt/release/app-1.4.2.tar.gz!/app-1.4.2/config/database.yml", lineOf(yml, pw), "url-credentials", "archive-targz")

	// jar: spring properties
	jpw := f.password()
	props := "spring.application.name=orders\nspring.datasource.url=jdbc:postgresql://db.corp.internal/orders\nspring.datasource.username=orders\nspring.datasource.password=" + jpw + "\n"
	b.add(layerApp, "app/lib/orders-service.jar", zipOf(
		[2][]byte{[]byte("META-INF/MANIFEST.MF"), []byte("Manifest-Version: 1.0\n")},
		[2][]byte{[]byte("BOOT-INF/classes/application.properties"), []byte(props)},
		[2][]byte{[]byte("BOOT-INF/classes/com/corp/Orders.class"), b.fill.elf(8 << 10)},
	))
	b.label(layerApp, "app/lib/orders-service.jar!/BOOT-INF/classes/application.properties", lineOf(props, jpw), "generic-password", "archive-jar")

	// war > jar > properties: depth 2
	sk := f.stripe()
	pay := "stripe.secret=" + sk + "\nstripe.currency=eur\n"
	innerJar := zipOf([2][]byte{[]byte("payments.properties"), []byte(pay)})
	b.add(layerApp, "app/dist/shop.war", zipOf(
		[2][]byte{[]byte("WEB-INF/web.xml"), []byte("<web-app/>\n")},
		[2][]byte{[]byte("WEB-INF/lib/payments-2.1.jar"), innerJar},
	))
	b.label(layerApp, "app/dist/shop.war!/WEB-INF/lib/payments-2.1.jar!/payments.properties", lineOf(pay, sk), "stripe-secret-key", "nested-archive")
}

func (b *builder) plantBinaryAndLogs() {
	f := b.f
	// a Go/C binary with credentials compiled in
	id, gh := f.awsKeyID(), f.github()
	b.add(layerApp, "usr/local/bin/app-server", b.fill.elf(256<<10, id, "github_token="+gh))
	b.label(layerApp, "usr/local/bin/app-server", 0, "aws-access-key-id", "binary")
	b.label(layerApp, "usr/local/bin/app-server", 0, "github-token", "binary")

	// a rotated, gzipped log with a token in a request dump
	tok := f.slack()
	head := string(b.fill.logs(20 << 10))
	line := "2024-03-02 10:11:12 DEBUG [http] POST https://slack.com/api/chat.postMessage headers={'Authorization': 'Bearer " + tok + "'}"
	logs := head + line + "\n" + string(b.fill.logs(20<<10))
	b.add(layerApp, "var/log/app/http.log.1.gz", gz([]byte(logs)))
	b.label(layerApp, "var/log/app/http.log.1.gz", lineOf(logs, tok), "slack-token", "gzip-file")
}

func (b *builder) plantVendored() {
	f := b.f
	tw := f.twilio()
	py := b.inCode(pyLines, 6<<10, "TWILIO_API_KEY = \""+tw+"\"  # FIXME: move to env before release")
	b.secret(layerDeps, "usr/lib/python3/site-packages/corp_sms/client.py", py, tw, "twilio-api-key", "vendored")

	hook := "https://hooks.slack.com/services/T" + f.pick(upper32, 8) + "/B" + f.pick(upper32, 8) + "/C0FFEE" + f.pick(alnum, 18)
	js := b.inCode(jsLines, 6<<10, "  const webhook = '"+hook+"';")
	b.secret(layerDeps, "app/node_modules/corp-alerts/lib/index.js", js, "T"+hook[len("https://hooks.slack.com/services/T"):], "slack-webhook", "vendored")

	key := f.gcpAPIKey()
	gosrc := b.inCode(goLines, 6<<10, "\tconst mapsKey = \""+key+"\"")
	b.secret(layerDeps, "app/vendor/github.com/corp/geo/client.go", gosrc, key, "gcp-api-key", "vendored")

	sh := "shpat_" + f.hex(32)
	rb := b.inCode(jsLines, 4<<10, "  accessToken: '"+sh+"',")
	b.secret(layerDeps, "app/node_modules/@corp/shop-sync/dist/config.js", rb, sh, "shopify-token", "vendored")
}

func (b *builder) plantConfig() {
	f := b.f
	sg, dbpw := f.sendgrid(), f.password()
	b.env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"APP_HOME=/app",
		"SENDGRID_API_KEY=" + sg,
		"DATABASE_URL=postgres://app:" + dbpw + "@db.corp.internal:5432/app",
		"API_BASE_URL=https://api.corp.internal",
		"LOG_LEVEL=info",
	}
	b.truth.Secrets = append(b.truth.Secrets,
		Label{Rule: "sendgrid-api-key", Where: "config-env", Layer: -1, Path: "config:env", Line: 3},
		Label{Rule: "url-credentials", Where: "config-env", Layer: -1, Path: "config:env", Line: 4},
	)
	npm, gl := f.npm(), f.gitlab()
	b.history = []string{
		"ARG GITLAB_TOKEN=" + gl,
		"RUN |1 NPM_TOKEN=" + npm + " /bin/sh -c npm ci --omit=dev # buildkit",
		"ENV APP_HOME=/app",
		"CMD [\"/usr/local/bin/app-server\"]",
	}
	b.truth.Secrets = append(b.truth.Secrets,
		Label{Rule: "gitlab-token", Where: "config-history", Layer: -1, Path: "config:history", Line: 1},
		Label{Rule: "npm-token", Where: "config-history", Layer: -1, Path: "config:history", Line: 2},
	)
}

// ---------------------------------------------------------------- decoys

func (b *builder) plantDecoys() {
	f := b.f
	awsDoc := "# AWS CLI\n\nConfigure credentials:\n\n    aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n    aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"
	b.decoy(layerBase, "usr/share/doc/awscli/README.md", awsDoc, "AKIAIOSFODNN7EXAMPLE", "doc-example")
	b.decoy(layerBase, "usr/share/doc/awscli/credentials.md", awsDoc, "wJalr", "doc-example")
	b.decoy(layerApp, "app/.env.example", "DB_PASSWORD=${DB_PASSWORD}\nSTRIPE_API_KEY=${STRIPE_API_KEY}\n", "DB_PASSWORD", "placeholder")
	b.decoy(layerApp, "app/config/default.yaml", "database:\n  user: app\n  password: changeme\n", "changeme", "placeholder")
	b.decoy(layerApp, "app/docs/setup.md", "Connect with `psql postgres://user:<password>@localhost/app`.\n", "<password>", "doc-example")
	b.decoy(layerApp, "app/docs/config.md", "```yaml\nsmtp:\n  password: <password>\n  api_key: your-api-key-here\n```\n", "<password>", "placeholder")
	b.decoy(layerApp, "root/.ssh/id_ed25519.pub", f.sshPub(), "ssh-rsa", "public-key")
	b.decoy(layerBase, "etc/ssl/certs/corp-root-ca.pem", f.certPEM(), "BEGIN CERTIFICATE", "certificate")
	b.decoy(layerApp, "app/keys/jwt-signing.pub.pem", f.pubPEM(), "BEGIN PUBLIC KEY", "public-key")
	sums := fmt.Sprintf("%s  app-1.4.2.tar.gz\n%s  orders-service.jar\n", f.hex(64), f.hex(64))
	b.decoy(layerApp, "opt/release/SHA256SUMS", sums, "app-1.4.2", "checksum")
	lock := fmt.Sprintf("{\n  \"packages\": {\n    \"node_modules/left-pad\": {\n      \"integrity\": \"sha512-%s\"\n    }\n  }\n}\n", f.b64(64))
	b.decoy(layerDeps, "app/package-lock.json", lock, "integrity", "checksum")
	b.decoy(layerApp, "app/data/sessions.json", fmt.Sprintf("{\"session_token\": %q, \"request_id\": %q}\n", f.uuid(), f.uuid()), "session_token", "uuid")
	b.decoy(layerApp, "app/tests/fixtures/users.json", "[{\"name\": \"alice\", \"password\": \"fake-password-for-tests\"}]\n", "fake-password", "test-fixture")
	b.decoy(layerApp, "app/tests/test_auth.py", "def test_login(client):\n    password = \"dummy-password-123\"\n    assert client.login(\"alice\", password)\n", "dummy-password", "test-fixture")
	b.decoy(layerApp, "app/static/js/checkout.js", "Stripe('pk_live_"+f.pick(alnum, 24)+"');\n", "pk_live_", "publishable-key")
	b.decoy(layerApp, "app/docs/auth.md", "Example token:\n\n    eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c\n", "eyJ", "doc-example")
	b.decoy(layerApp, "app/.github/workflows/ci.yml", "jobs:\n  build:\n    steps:\n      - uses: actions/checkout@v4\n        with:\n          token: ${{ secrets.GITHUB_TOKEN }}\n", "token:", "placeholder")
	b.decoy(layerApp, "app/docs/maps.md", "Set `mapsKey` to your key, e.g. AIzaSyXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX.\n", "AIza", "placeholder")
	b.decoy(layerApp, "app/src/settings.py", "import os\nDB_PASSWORD = os.environ[\"DB_PASSWORD\"]\nSECRET_KEY = os.getenv(\"SECRET_KEY\")\n", "DB_PASSWORD", "env-reference")
	b.decoy(layerApp, "app/docs/tls.md", "Paste your key:\n\n    -----BEGIN RSA PRIVATE KEY-----\n    ...\n    -----END RSA PRIVATE KEY-----\n", "BEGIN RSA", "placeholder")
	b.decoy(layerApp, "app/docs/registry.md", "```json\n{\"auths\": {\"registry.corp.internal\": {\"auth\": \"\"}}}\n```\n", "auths", "placeholder")
	b.decoy(layerApp, "app/config/dev.env", "DATABASE_URL=mysql://root:@localhost:3306/app\n", "mysql", "empty-password")
	b.decoy(layerApp, "app/tests/test_github.py", "TOKEN = \"ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\"\n", "ghp_", "test-fixture")
	b.decoy(layerBase, "etc/shadow", "root:*:19000:0:99999:7:::\napp:!:19000:0:99999:7:::\n", "root", "locked-account")
	b.decoy(layerApp, "app/config/secrets.yaml", "db:\n  password_file: /run/secrets/db_password\n  token_path: /var/run/secrets/kubernetes.io/serviceaccount/token\n", "password_file", "file-reference")
	b.decoy(layerApp, "app/config/storage.env", "AZURE_STORAGE_CONNECTION_STRING=UseDevelopmentStorage=true\n", "AZURE", "dev-setting")
	b.decoy(layerApp, "app/.git/ORIG_HEAD", f.hex(40)+"\n", "", "checksum")
	b.decoy(layerApp, "app/docs/slack.md", "Set SLACK_WEBHOOK to https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX\n", "hooks", "doc-example")
	b.decoy(layerApp, "app/docs/stripe.md", "Use a test key such as sk_test_"+f.pick(alnum, 24)+" in development.\n", "sk_test", "test-key")
	b.decoy(layerApp, "app/config/redis.conf", "# requirepass foobared\nrequirepass ${REDIS_PASSWORD}\n", "requirepass", "placeholder")
}
