package scangen

import (
	"fmt"
	"strings"
)

// The second layout: a JVM service, a Rails app and a Node frontend with
// their infrastructure tools, on six layers, with secrets of other kinds in
// other places than layout 1. Nothing here depends on the seed but values
// and filler.
const (
	l2Base    = 0 // OS: binaries, libraries, docs, man pages
	l2Runtime = 1 // JVM, Ruby gems, node_modules, Go tools
	l2App     = 2 // the three apps, their configs, the operator's dotfiles
	l2Ops     = 3 // CI server, monitoring, VPN, logs
	l2Cleanup = 4 // deletes and overwrites some mistakes
	l2Final   = 5 // late additions
)

func (b *builder) plan2() {
	total := b.o.Filler
	b.fill2Base(total * 35 / 100)
	b.fill2Runtime(total * 40 / 100)
	b.fill2App(total * 25 / 100)
	b.layers = append(b.layers, make([][]file, l2Final+1-len(b.layers))...)
	b.labels = map[string]string{"org.opencontainers.image.title": "storefront", "maintainer": "platform@corp.internal"}

	b.plant2Apps()
	b.plant2Dotfiles()
	b.plant2Ops()
	b.plant2Hidden()
	b.plant2Config()
	b.plant2Decoys()
}

func (b *builder) fill2Base(budget int64) {
	var used int64
	for i := 0; used < budget; i++ {
		var data []byte
		var p string
		switch i % 6 {
		case 0, 1, 2:
			data = b.fill.elf(b.size(min(int(budget/25)+1, 1536<<10)))
			p = fmt.Sprintf("usr/lib/lib%s%s.so.%d", b.fill.ident(), b.fill.ident(), i)
		case 3:
			data = b.fill.prose(b.size(12 << 10))
			p = fmt.Sprintf("usr/share/doc/%s%d/README.md", b.fill.ident(), i)
		case 4:
			data = gz(b.fill.prose(b.size(8 << 10)))
			p = fmt.Sprintf("usr/share/man/man1/%s-%s.%d.1.gz", b.fill.ident(), b.fill.ident(), i)
		case 5:
			data = b.fill.elf(b.size(min(int(budget/30)+1, 768<<10)))
			p = fmt.Sprintf("bin/%s%d", b.fill.ident(), i)
		}
		b.add(l2Base, p, data)
		used += int64(len(data))
	}
	b.add(l2Base, "etc/os-release", []byte("NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n"))
}

func (b *builder) fill2Runtime(budget int64) {
	var used int64
	for i := 0; used < budget; i++ {
		var data []byte
		var p string
		switch i % 7 {
		case 0, 1:
			data = b.fill.code(jsLines, b.size(9<<10))
			p = fmt.Sprintf("srv/web/node_modules/%s-%s/dist/%s.%d.js", b.fill.ident(), b.fill.ident(), b.fill.ident(), i)
		case 2:
			data = b.fill.code(rubyLines, b.size(6<<10))
			p = fmt.Sprintf("srv/rails/vendor/bundle/ruby/3.2.0/gems/%s-%d.%d/lib/%s.rb", b.fill.ident(), i%9, i%4, b.fill.ident())
		case 3, 4:
			var members [][2][]byte
			for j := range 2 + b.r.IntN(8) {
				members = append(members, [2][]byte{
					fmt.Appendf(nil, "org/%s/%s/%s%d.class", b.fill.ident(), b.fill.ident(), b.fill.ident(), j),
					b.fill.elf(b.size(5 << 10)),
				})
			}
			data = zipOf(members...)
			p = fmt.Sprintf("opt/app/lib/%s-%s-%d.%d.jar", b.fill.ident(), b.fill.ident(), i%7, i%11)
		case 5:
			data = b.fill.elf(b.size(min(int(budget/20)+1, 2<<20)))
			p = fmt.Sprintf("usr/local/bin/%s-%s%d", b.fill.ident(), b.fill.ident(), i)
		case 6:
			data = b.fill.jsonData(b.size(12 << 10))
			p = fmt.Sprintf("srv/web/node_modules/%s/package.%d.json", b.fill.ident(), i)
		}
		b.add(l2Runtime, p, data)
		used += int64(len(data))
	}
}

func (b *builder) fill2App(budget int64) {
	var used int64
	for i := 0; used < budget; i++ {
		var data []byte
		var p string
		switch i % 6 {
		case 0:
			data = b.fill.code(rubyLines, b.size(5<<10))
			p = fmt.Sprintf("srv/rails/app/controllers/%s_%d_controller.rb", b.fill.ident(), i)
		case 1:
			data = b.fill.code(javaLines, b.size(6<<10))
			p = fmt.Sprintf("opt/app/src/main/java/com/corp/%s/%s%d.java", b.fill.ident(), strings.ToUpper(b.fill.ident()[:1])+b.fill.ident(), i)
		case 2:
			data = b.fill.logs(b.size(24 << 10))
			p = fmt.Sprintf("var/log/app/%s-%d.log", b.fill.ident(), i)
		case 3:
			data = b.fill.noise(b.size(min(int(budget/30)+1, 192<<10)))
			p = fmt.Sprintf("srv/web/public/assets/%s-%s.%d.png", b.fill.ident(), b.f.hex(8), i)
		case 4:
			data = b.fill.code(jsLines, b.size(12<<10))
			p = fmt.Sprintf("srv/web/.next/server/chunks/%d.js", i)
		case 5:
			data = gz(b.fill.logs(b.size(32 << 10)))
			p = fmt.Sprintf("var/log/nginx/access.log.%d.gz", i)
		}
		b.add(l2App, p, data)
		used += int64(len(data))
	}
}

func (b *builder) plant2Apps() {
	f := b.f
	// Spring Boot: the production profile inside the jar.
	dbpw := f.password()
	prod := "spring:\n  datasource:\n    url: jdbc:postgresql://orders-db.corp.internal:5432/orders\n    username: orders\n    password: " + dbpw + "\n  jpa:\n    open-in-view: false\n"
	b.add(l2App, "opt/app/storefront.jar", zipOf(
		[2][]byte{[]byte("META-INF/MANIFEST.MF"), []byte("Manifest-Version: 1.0\nMain-Class: org.springframework.boot.loader.launch.JarLauncher\n")},
		[2][]byte{[]byte("BOOT-INF/classes/application.yml"), []byte("spring:\n  datasource:\n    password: ${DB_PASSWORD}\n")},
		[2][]byte{[]byte("BOOT-INF/classes/application-prod.yml"), []byte(prod)},
		[2][]byte{[]byte("BOOT-INF/classes/com/corp/Storefront.class"), b.fill.elf(12 << 10)},
	))
	b.labelK("spring-profile-in-jar", l2App, "opt/app/storefront.jar!/BOOT-INF/classes/application-prod.yml", lineOf(prod, dbpw), "generic-password", "archive-jar")
	b.truth.Decoys = append(b.truth.Decoys, Label{Where: "placeholder", Layer: l2App, Path: "opt/app/storefront.jar!/BOOT-INF/classes/application.yml", Line: 3})

	signing := f.b64(48)
	appYml := "app:\n  jwt:\n    issuer: https://auth.corp.internal\n    signing-key: " + signing + "\n    public-key: MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + f.b64(48) + "\n"
	b.secretK("signing-key", l2App, "opt/app/config/application.yml", appYml, signing, "generic-key", "plain")

	b.add(l2App, "opt/app/config/keystore.p12", f.p12())
	b.labelK("pkcs12-keystore", l2App, "opt/app/config/keystore.p12", 0, "java-keystore", "keystore")
	jwk := f.jwkPrivate()
	b.secretK("jwk", l2App, "opt/app/config/jwks.json", jwk, `"kty"`, "jwk-private-key", "plain")

	// Node frontend.
	sentry, mapbox, whsec := f.sentry(), f.mapbox(), f.whsec()
	env := "NEXT_PUBLIC_API_URL=https://api.corp.internal\nNEXT_PUBLIC_MAPBOX_TOKEN=pk.eyJ1IjoiY29ycCIsImEiOiJ" + f.pick(b64url, 20) + "\nSENTRY_AUTH_TOKEN=" + sentry + "\nMAPBOX_SECRET_TOKEN=" + mapbox + "\nSTRIPE_WEBHOOK_SECRET=" + whsec + "\n"
	b.secretK("sentry-token", l2App, "srv/web/.env.production", env, sentry, "sentry-token", "plain")
	b.labelK("mapbox-secret-token", l2App, "srv/web/.env.production", lineOf(env, mapbox), "mapbox-secret-token", "plain")
	b.labelK("stripe-webhook-secret", l2App, "srv/web/.env.production", lineOf(env, whsec), "stripe-webhook-secret", "plain")
	sb, ps := f.supabase(), f.planetscale()
	local := "SUPABASE_ACCESS_TOKEN=" + sb + "\nPLANETSCALE_SERVICE_TOKEN=" + ps + "\n"
	b.secretK("supabase-token", l2App, "srv/web/.env.local", local, sb, "supabase-token", "dotfile")
	b.labelK("planetscale-token", l2App, "srv/web/.env.local", lineOf(local, ps), "planetscale-token", "dotfile")
	cf := f.contentful()
	b.secretK("contentful-token", l2App, "srv/web/contentful.config.js", "module.exports = {\n  space: '"+f.pick(alnum, 12)+"',\n  managementToken: '"+cf+"',\n};\n", cf, "contentful-token", "plain")
	dp := f.doppler()
	b.secretK("doppler-token", l2App, "srv/web/.doppler.yaml", "scoped:\n  /srv/web:\n    token: "+dp+"\n    enclave.project: storefront\n", dp, "doppler-token", "dotfile")

	// Rails.
	b.secretK("rails-master-key", l2App, "srv/rails/config/master.key", f.railsMasterKey(), "", "rails-master-key", "plain")
	mg := f.mailgun()
	b.secretK("mailgun-api-key", l2App, "srv/rails/config/initializers/mailgun.rb", "Mailgun.configure do |config|\n  config.api_key = '"+mg+"'\nend\n", mg, "mailgun-api-key", "plain")
	sq := f.square()
	b.secretK("square-token", l2App, "srv/rails/config/initializers/square.rb", "SQUARE = Square::Client.new(\n  access_token: '"+sq+"',\n  environment: 'production'\n)\n", sq, "square-token", "plain")
	nr, ali := f.newrelic(), f.alibaba()
	renv := "RAILS_ENV=production\nNEW_RELIC_API_KEY=" + nr + "\nALIBABA_CLOUD_ACCESS_KEY_ID=" + ali + "\n"
	b.secretK("newrelic-key", l2App, "srv/rails/.env", renv, nr, "newrelic-key", "dotfile")
	b.labelK("alibaba-access-key-id", l2App, "srv/rails/.env", lineOf(renv, ali), "alibaba-access-key-id", "dotfile")

	// A legacy blog beside the shop.
	wp := f.password()
	wpc := "<?php\ndefine( 'DB_NAME', 'blog' );\ndefine( 'DB_USER', 'blog' );\ndefine( 'DB_PASSWORD', '" + wp + "' );\ndefine( 'DB_HOST', 'mysql.corp.internal' );\n$table_prefix = 'wp_';\n"
	b.secretK("wp-config", l2App, "var/www/html/wp-config.php", wpc, wp, "php-define-password", "plain")

	// Integrations of the JVM service.
	lin, ntn, fig, pm := f.linear(), f.notion(), f.figma(), f.postman()
	ints := "linear:\n  api-key: " + lin + "\nnotion:\n  token: " + ntn + "\nfigma:\n  token: " + fig + "\npostman:\n  api-key: " + pm + "\n"
	b.secretK("linear-api-key", l2App, "opt/app/config/integrations.yml", ints, lin, "linear-api-key", "plain")
	b.labelK("notion-token", l2App, "opt/app/config/integrations.yml", lineOf(ints, ntn), "notion-token", "plain")
	b.labelK("figma-token", l2App, "opt/app/config/integrations.yml", lineOf(ints, fig), "figma-token", "plain")
	b.labelK("postman-api-key", l2App, "opt/app/config/integrations.yml", lineOf(ints, pm), "postman-api-key", "plain")

	// Machine learning notebooks.
	r8 := "r8_" + f.pick(alnum, 37)
	nb := notebook([]string{"import os, replicate", "os.environ[\"REPLICATE_API_TOKEN\"] = \"" + r8 + "\"", "out = replicate.run(MODEL, input=prompt)"},
		[]string{"prediction 4f2a done in 3.2s"})
	b.secretK("replicate-token", l2App, "srv/ml/notebooks/train.ipynb", nb, r8, "replicate-token", "jupyter")
	xai := "xai-" + f.pick(alnum, 80)
	b.secretK("xai-api-key", l2App, "srv/ml/.env", "XAI_API_KEY="+xai+"\n", xai, "xai-api-key", "dotfile")
}

func (b *builder) plant2Dotfiles() {
	f := b.f
	mvn := f.password()
	settings := "<settings>\n  <servers>\n    <server>\n      <id>corp-releases</id>\n      <username>deploy</username>\n      <password>" + mvn + "</password>\n    </server>\n  </servers>\n</settings>\n"
	b.secretK("maven-settings", l2App, "root/.m2/settings.xml", settings, mvn, "xml-password", "dotfile")
	tfc := f.tfcloud()
	b.secretK("terraform-cloud-token", l2App, "root/.terraform.d/credentials.tfrc.json", "{\n  \"credentials\": {\n    \"app.terraform.io\": {\n      \"token\": \""+tfc+"\"\n    }\n  }\n}\n", tfc, "terraform-cloud-token", "dotfile")
	rt, cs := f.googleRefresh(), "GOCSPX-"+f.pick(b64url, 28)
	adc := "{\n  \"client_id\": \"" + f.pick(digits, 12) + "-" + f.pick(alnum[26:52]+digits, 32) + ".apps.googleusercontent.com\",\n  \"client_secret\": \"" + cs + "\",\n  \"refresh_token\": \"" + rt + "\",\n  \"type\": \"authorized_user\"\n}\n"
	b.secretK("gcloud-adc", l2App, "root/.config/gcloud/application_default_credentials.json", adc, rt, "google-oauth-token", "dotfile")
	b.labelK("gcloud-adc", l2App, "root/.config/gcloud/application_default_credentials.json", lineOf(adc, cs), "gcp-oauth-client-secret", "dotfile")
	gho := f.githubValid("gho")
	b.secretK("gh-cli-hosts", l2App, "root/.config/gh/hosts.yml", "github.com:\n    user: corp-deploy\n    oauth_token: "+gho+"\n    git_protocol: https\n", gho, "github-token", "dotfile")
	ghp := f.githubValid("ghp")
	b.secretK("git-credentials", l2App, "root/.git-credentials", "https://corp-deploy:"+ghp+"@github.com\n", ghp, "github-token", "dotfile")
	dbx := f.databricks()
	b.secretK("databricks-token", l2App, "root/.databrickscfg", "[DEFAULT]\nhost = https://corp.cloud.databricks.com\ntoken = "+dbx+"\n", dbx, "databricks-token", "dotfile")
	pul := f.pulumi()
	b.secretK("pulumi-token", l2App, "root/.pulumi/credentials.json", "{\n  \"current\": \"https://api.pulumi.com\",\n  \"accessTokens\": {\n    \"https://api.pulumi.com\": \""+pul+"\"\n  }\n}\n", pul, "pulumi-token", "dotfile")
	b.secretK("vault-token-file", l2App, "root/.vault-token", f.vaultLegacy(), "", "vault-token-file", "dotfile")
	hf := f.huggingface()
	b.secretK("huggingface-token", l2App, "root/.cache/huggingface/token", hf, hf, "huggingface-token", "dotfile")
	gem := f.rubygems()
	b.secretK("rubygems-api-key", l2App, "root/.gem/credentials", "---\n:rubygems_api_key: "+gem+"\n", gem, "rubygems-api-key", "dotfile")
	nuget := f.password()
	nc := "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<configuration>\n  <packageSourceCredentials>\n    <corp>\n      <add key=\"Username\" value=\"ci\" />\n      <add key=\"ClearTextPassword\" value=\"" + nuget + "\" />\n    </corp>\n  </packageSourceCredentials>\n</configuration>\n"
	b.secretK("nuget-config", l2App, "opt/tools/NuGet.Config", nc, nuget, "xml-attribute-password", "plain")
	jf := f.jfrog()
	b.secretK("jfrog-token", l2App, "root/.jfrog/jfrog-cli.conf.v6", "{\n  \"servers\": [\n    {\n      \"url\": \"https://corp.jfrog.io/\",\n      \"user\": \"ci\",\n      \"accessToken\": \""+jf+"\",\n      \"serverId\": \"corp\"\n    }\n  ],\n  \"version\": \"6\"\n}\n", jf, "jfrog-token", "dotfile")
	mypw, bearer := f.password(), f.opaque(48)
	hist := "ls -la\ncd /srv/rails\nmysql -h orders-db.corp.internal -u admin -p" + mypw + " orders\ncurl -s -H \"Authorization: Bearer " + bearer + "\" https://api.corp.internal/v2/orders | jq .\nexit\n"
	b.secretK("shell-history", l2App, "root/.bash_history", hist, mypw, "mysql-cli-password", "dotfile")
	b.labelK("shell-history", l2App, "root/.bash_history", lineOf(hist, bearer), "bearer-token", "dotfile")
	ppk := f.putty()
	b.add(l2App, "root/.ssh/deploy.ppk", []byte(ppk))
	b.labelK("putty-key", l2App, "root/.ssh/deploy.ppk", lineOf(ppk, "Private-Lines")+1, "putty-private-key", "dotfile")
}

func (b *builder) plant2Ops() {
	f := b.f
	b.secretK("redis-requirepass", l2Ops, "etc/redis/redis.conf", "bind 0.0.0.0\nport 6379\nrequirepass "+f.password()+"\nmaxmemory 512mb\n", "requirepass", "redis-password", "plain")
	wg := f.wireguard()
	b.secretK("wireguard-key", l2Ops, "etc/wireguard/wg0.conf", "[Interface]\nAddress = 10.8.0.2/24\nPrivateKey = "+wg+"\n\n[Peer]\nPublicKey = "+f.b64(32)+"\nEndpoint = vpn.corp.internal:51820\nAllowedIPs = 10.8.0.0/16\n", wg, "wireguard-private-key", "plain")
	b.secretK("openvpn-static-key", l2Ops, "etc/openvpn/ta.key", f.openvpnKey(), "-----BEGIN OpenVPN", "openvpn-static-key", "plain")
	b.secretK("jenkins-master-key", l2Ops, "var/jenkins_home/secrets/master.key", f.hex(512), "", "jenkins-master-key", "plain")
	jpw := f.password()
	job := "<?xml version='1.1' encoding='UTF-8'?>\n<project>\n  <builders>\n    <hudson.tasks.Shell>\n      <command>curl -fsS -u deploy:" + jpw + " -T build/app.tgz https://nexus.corp.internal/repository/releases/</command>\n    </hudson.tasks.Shell>\n  </builders>\n</project>\n"
	b.secretK("jenkins-job", l2Ops, "var/jenkins_home/jobs/deploy/config.xml", job, jpw, "curl-basic-auth", "ci-config")
	gpw := f.password()
	b.secretK("grafana-datasource", l2Ops, "etc/grafana/provisioning/datasources/prometheus.yaml", "apiVersion: 1\ndatasources:\n  - name: Prometheus\n    type: prometheus\n    url: https://prometheus.corp.internal\n    basicAuth: true\n    basicAuthUser: grafana\n    secureJsonData:\n      basicAuthPassword: "+gpw+"\n", gpw, "generic-password", "plain")
	teams, smtp := f.teamsHook(), f.password()
	am := "global:\n  smtp_smarthost: smtp.corp.internal:587\n  smtp_auth_username: alerts\n  smtp_auth_password: " + smtp + "\nreceivers:\n  - name: oncall\n    msteams_configs:\n      - webhook_url: " + teams + "\n"
	b.secretK("alertmanager", l2Ops, "etc/alertmanager/alertmanager.yml", am, smtp, "generic-password", "plain")
	b.labelK("teams-webhook", l2Ops, "etc/alertmanager/alertmanager.yml", lineOf(am, teams), "teams-webhook", "plain")
	tg, dh := f.telegram(), f.discordHook()
	benv := "TELEGRAM_BOT_TOKEN=" + tg + "\nDISCORD_WEBHOOK_URL=" + dh + "\n"
	b.secretK("telegram-bot-token", l2Ops, "opt/bots/notifier/.env", benv, tg, "telegram-bot-token", "dotfile")
	b.labelK("discord-webhook", l2Ops, "opt/bots/notifier/.env", lineOf(benv, dh), "discord-webhook", "dotfile")
	xapp := f.slackApp()
	b.secretK("slack-app-token", l2Ops, "opt/bots/notifier/config.json", "{\n  \"slack\": {\n    \"appToken\": \""+xapp+"\",\n    \"channel\": \"#deploys\"\n  }\n}\n", xapp, "slack-app-token", "plain")
	basic := b64("ops:" + f.password())
	dbg := string(b.fill.logs(8<<10)) + "2024-03-03 09:12:44 DEBUG [proxy] > GET /internal/metrics HTTP/1.1\n2024-03-03 09:12:44 DEBUG [proxy] > Authorization: Basic " + basic + "\n" + string(b.fill.logs(8<<10))
	b.secretK("basic-auth-log", l2Ops, "var/log/nginx/debug.log", dbg, basic, "basic-auth-header", "plain")
	ya := f.googleAccess()
	sync := string(b.fill.logs(16<<10)) + "2024-03-02 04:00:01 DEBUG [gdrive] POST https://www.googleapis.com/upload/drive/v3/files headers={'Authorization': 'OAuth " + ya + "'}\n" + string(b.fill.logs(16<<10))
	b.add(l2Ops, "var/log/app/sync.log.1.gz", gz([]byte(sync)))
	b.labelK("google-oauth-token", l2Ops, "var/log/app/sync.log.1.gz", lineOf(sync, ya), "google-oauth-token", "gzip-file")
	sig := f.sasSig()
	bk := "#!/bin/sh\nset -eu\npg_dump orders | gzip > /tmp/orders.sql.gz\nazcopy copy /tmp/orders.sql.gz \"https://corpbackups.blob.core.windows.net/db/orders.sql.gz?sv=2022-11-02&ss=b&srt=o&sp=rwc&se=2026-01-01T00:00:00Z&st=2024-01-01T00:00:00Z&spr=https&sig=" + sig + "\"\n"
	b.secretK("azure-sas-token", l2Ops, "opt/backup/backup.sh", bk, sig, "azure-sas-token", "plain")
	gl := f.grafanaSA()
	b.secretK("grafana-token", l2Ops, "opt/infra/scripts/dashboards.sh", "#!/bin/sh\nfor d in dashboards/*.json; do\n  curl -s -X POST -H \"Authorization: Bearer "+gl+"\" -H 'Content-Type: application/json' -d @\"$d\" https://grafana.corp.internal/api/dashboards/db\ndone\n", gl, "grafana-token", "plain")
	cfk := f.cloudflareCA()
	b.secretK("cloudflare-origin-ca-key", l2Ops, "opt/infra/ansible/group_vars/prod.yml", "---\ncloudflare_zone: corp.example\ncloudflare_origin_ca_key: \""+cfk+"\"\n", cfk, "cloudflare-origin-ca-key", "plain")
	consul := f.uuid()
	b.secretK("consul-token", l2Ops, "opt/infra/consul.env", "CONSUL_HTTP_ADDR=https://consul.corp.internal:8501\nCONSUL_HTTP_TOKEN="+consul+"\n", consul, "uuid-token", "dotfile")
	hvb := f.hvb()
	b.secretK("vault-batch-token", l2Ops, "opt/infra/ansible/vault-agent.env", "VAULT_ADDR=https://vault.corp.internal:8200\nVAULT_TOKEN="+hvb+"\n", hvb, "vault-batch-token", "dotfile")
	azs := f.azureClientSecret()
	tf := "{\n  \"version\": 4,\n  \"resources\": [\n    {\n      \"type\": \"azuread_application_password\",\n      \"name\": \"ci\",\n      \"instances\": [\n        {\n          \"attributes\": {\n            \"display_name\": \"ci\",\n            \"value\": \"" + azs + "\"\n          }\n        }\n      ]\n    }\n  ]\n}\n"
	b.secretK("terraform-state-azure", l2Ops, "opt/infra/terraform/terraform.tfstate", tf, azs, "azure-ad-client-secret", "terraform-state")
	do := f.digitalocean()
	b.add(l2Ops, "opt/tools/bin/deploy-cli", b.fill.elf(384<<10, "https://api.digitalocean.com/v2", do))
	b.labelK("digitalocean-token", l2Ops, "opt/tools/bin/deploy-cli", 0, "digitalocean-token", "binary")
	mc := f.mailchimp()
	plug := "{\n  \"analytics\": {\n    \"mailchimp\": {\n      \"apiKey\": \"" + mc + "\",\n      \"list\": \"newsletter\"\n    }\n  }\n}\n"
	b.add(l2Ops, "opt/app/plugins.tar.gz", gz(tarOf(
		[2][]byte{[]byte("plugins/analytics/README"), b.fill.prose(2 << 10)},
		[2][]byte{[]byte("plugins/analytics/config.json"), []byte(plug)},
	)))
	b.labelK("mailchimp-api-key", l2Ops, "opt/app/plugins.tar.gz!/plugins/analytics/config.json", lineOf(plug, mc), "mailchimp-api-key", "archive-targz")
}

// plant2Hidden: what later layers deleted or overwrote, and git history.
func (b *builder) plant2Hidden() {
	f := b.f
	groq := "gsk_" + f.pick(alnum, 52)
	b.secretK("groq-api-key", l2App, "opt/app/config/application-secrets.properties", "groq.api-key="+groq+"\n", groq, "groq-api-key", "deleted")
	b.add(l2Cleanup, "opt/app/config/.wh.application-secrets.properties", nil)
	b.status("opt/app/config/application-secrets.properties", "deleted in layer 4")

	feed := f.gitlabFeed()
	rc := "@corp:registry=https://gitlab.corp.internal/api/v4/packages/npm/\n//gitlab.corp.internal/api/v4/packages/npm/:_authToken=" + feed + "\n"
	b.secretK("gitlab-feed-token", l2App, "srv/web/.npmrc", rc, feed, "gitlab-other-token", "overwritten")
	b.status("srv/web/.npmrc", "overwritten in layer 4")
	b.decoy(l2Cleanup, "srv/web/.npmrc", "@corp:registry=https://gitlab.corp.internal/api/v4/packages/npm/\n//gitlab.corp.internal/api/v4/packages/npm/:_authToken=${NPM_TOKEN}\n", "_authToken", "placeholder")

	oa := f.openaiProject()
	content := "OPENAI_API_KEY=" + oa + "\n"
	obj := zlibOf([]byte(fmt.Sprintf("blob %d\x00%s", len(content), content)))
	loose := "srv/rails/.git/objects/" + f.hex(2) + "/" + f.hex(38)
	b.add(l2App, loose, obj)
	b.labelK("git-loose-object", l2App, loose, 1, "openai-api-key", "git-object")

	ops := f.onepassword()
	b.secretK("onepassword-token", l2Final, "opt/app/bin/start.sh", "#!/bin/sh\nexport OP_SERVICE_ACCOUNT_TOKEN="+ops+"\nexec java -jar /opt/app/storefront.jar\n", ops, "onepassword-token", "plain")
}

func (b *builder) plant2Config() {
	f := b.f
	hk, hpw := f.heroku(), f.password()
	b.env = []string{
		"PATH=/opt/java/openjdk/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"JAVA_HOME=/opt/java/openjdk",
		"HEROKU_API_KEY=" + hk,
		"SPRING_PROFILES_ACTIVE=prod",
	}
	b.truth.Secrets = append(b.truth.Secrets, Label{Rule: "heroku-api-key", Kind: "heroku-api-key", Where: "config-env", Layer: -1, Path: "config:env", Line: 3})
	at := f.atlassian()
	b.history = []string{
		"ARG ATLASSIAN_TOKEN=" + at,
		"RUN helm repo add corp https://charts.corp.internal --username ci --password " + hpw + " # buildkit",
		"ENV SPRING_PROFILES_ACTIVE=prod",
		"ENTRYPOINT [\"/opt/app/bin/start.sh\"]",
	}
	b.truth.Secrets = append(b.truth.Secrets,
		Label{Rule: "atlassian-token", Kind: "atlassian-token", Where: "config-history", Layer: -1, Path: "config:history", Line: 1},
		Label{Rule: "cli-password-flag", Kind: "cli-password-flag", Where: "config-history", Layer: -1, Path: "config:history", Line: 2},
	)
}

func (b *builder) plant2Decoys() {
	f := b.f
	b.decoy(l2App, "srv/web/.env.example", "SENTRY_AUTH_TOKEN=\nMAPBOX_SECRET_TOKEN=sk.your-token-here\nSTRIPE_WEBHOOK_SECRET=whsec_...\n", "MAPBOX", "template")
	b.decoy(l2Runtime, "srv/web/node_modules/@sentry/cli/README.md", "## Configuration\n\n```sh\nexport SENTRY_AUTH_TOKEN=sntryu_"+f.hex(64)+"\nsentry-cli releases new \"$VERSION\"\n```\n", "SENTRY_AUTH_TOKEN", "doc-example")
	b.decoy(l2Runtime, "srv/web/node_modules/mapbox-gl/README.md", "mapboxgl.accessToken = 'pk.eyJ1IjoiZXhhbXBsZXMiLCJhIjoiY2p0MG01MXRqMW45cjQzb2R6b2ptc3J4MSJ9."+f.pick(b64url, 22)+"';\n", "accessToken", "public-token")
	b.decoy(l2App, "srv/rails/spec/fixtures/files/credentials.yml", "stripe:\n  secret_key: sk_live_"+f.pick(alnum, 32)+"\n", "sk_live", "test-fixture")
	b.decoy(l2App, "srv/rails/test/fixtures/users.yml", "alice:\n  email: alice@corp.internal\n  encrypted_password: $2a$12$"+f.pick(alnum+"./", 53)+"\n", "encrypted_password", "test-fixture")
	b.decoy(l2App, "srv/rails/config/database.yml", "production:\n  adapter: postgresql\n  url: <%= ENV['DATABASE_URL'] %>\n  password: <%= ENV['DB_PASSWORD'] %>\n", "password", "placeholder")
	b.decoy(l2Ops, "var/jenkins_home/credentials.xml", "<com.cloudbees.plugins.credentials.impl.UsernamePasswordCredentialsImpl>\n  <id>nexus</id>\n  <username>deploy</username>\n  <password>{AQAAABAAAAAQ"+f.b64(36)+"}</password>\n</com.cloudbees.plugins.credentials.impl.UsernamePasswordCredentialsImpl>\n", "<password>", "encrypted")
	b.decoy(l2Ops, "opt/infra/terraform/variables.tf", "variable \"client_secret\" {\n  type      = string\n  sensitive = true\n}\n", "client_secret", "placeholder")
	b.decoy(l2Ops, "opt/infra/terraform/terraform.tfvars.example", "client_secret = \"REPLACE_ME\"\ndb_password   = \"<db password>\"\n", "REPLACE_ME", "template")
	b.decoy(l2Base, "usr/share/doc/wireguard-tools/examples/wg0.conf", "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\nListenPort = 51820\n", "PrivateKey", "doc-example")
	b.decoy(l2App, "root/.ssh/authorized_keys", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"+f.pick(b64std, 43)+" ops@corp\n", "ssh-ed25519", "public-key")
	b.decoy(l2App, "opt/app/config/jwks-public.json", f.jwkPublic(), "kty", "public-key")
	b.decoy(l2Runtime, "srv/web/yarn.lock", "\"left-pad@^1.3.0\":\n  version \"1.3.0\"\n  resolved \"https://registry.yarnpkg.com/left-pad/-/left-pad-1.3.0.tgz#"+f.hex(40)+"\"\n  integrity sha512-"+f.b64(64)+"\n", "integrity", "checksum")
	b.decoy(l2Runtime, "opt/tools/go.sum", "github.com/spf13/cobra v1.8.0 h1:"+f.b64(32)+"\ngithub.com/spf13/cobra v1.8.0/go.mod h1:"+f.b64(32)+"\n", "cobra", "checksum")
	b.decoy(l2Ops, "etc/grafana/grafana.ini", "[security]\nadmin_user = admin\nadmin_password = admin\n", "admin_password", "default-credential")
	b.decoy(l2App, "opt/app/README.md", "Check the service:\n\n    curl -u admin:admin http://localhost:8080/actuator/health\n", "curl", "doc-example")
	b.decoy(l2Ops, "opt/infra/k8s/sealed-secret.yaml", "apiVersion: bitnami.com/v1alpha1\nkind: SealedSecret\nspec:\n  encryptedData:\n    password: AgB"+f.pick(b64std, 600)+"==\n", "password", "encrypted")
	b.decoy(l2Ops, "opt/infra/k8s/deployment.yaml", "env:\n  - name: DB_PASSWORD\n    valueFrom:\n      secretKeyRef:\n        name: orders-db\n        key: password\n", "DB_PASSWORD", "secret-reference")
	b.decoy(l2Ops, "opt/infra/ansible/group_vars/all/vault.yml", "vault_db_password: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  "+f.hex(64)+"\n  "+f.hex(64)+"\n", "vault_db_password", "encrypted")
	b.decoy(l2App, "srv/web/src/__tests__/api.test.ts", "const token = 'ghp_"+f.pick(alnum, 36)+"';\nexpect(client(token).user()).resolves.toBeDefined();\n", "ghp_", "test-fixture")
	b.decoy(l2App, "opt/app/src/test/resources/application-test.yml", "spring:\n  datasource:\n    password: "+f.pick(alnum, 14)+"\n", "password", "test-fixture")
	b.decoy(l2Runtime, "srv/web/node_modules/pg/test/integration/connection-pool/tls-tests.js", "const config = { user: 'postgres', password: '"+f.pick(alnum, 12)+"', host: 'localhost' }\n", "password", "vendored-test")
	mock := f.pick(alnum, 5) + "-" + f.pick(digits, 4) + "-local"
	b.add(l2Runtime, "srv/web/node_modules/redis-mock/README.md", []byte("The mock server starts with password `"+mock+"` unless you pass one.\n"))
	b.decoy(l2Runtime, "srv/web/node_modules/redis-mock/lib/config.js", "module.exports = { port: 6380, password: '"+mock+"' };\n", "password", "documented-default")
	b.decoy(l2Ops, "opt/infra/docker-compose.dev.yml", "services:\n  mysql:\n    environment:\n      MYSQL_ROOT_PASSWORD: my-secret-pw\n  postgres:\n    environment:\n      POSTGRES_PASSWORD: mysecretpassword\n", "MYSQL_ROOT_PASSWORD", "default-credential")
	b.decoy(l2App, "srv/web/.github/workflows/release.yml", "      - uses: docker/login-action@v3\n        with:\n          password: ${{ secrets.REGISTRY_PASSWORD }}\n", "password", "placeholder")
	b.decoy(l2App, "srv/web/.travis.yml", "env:\n  global:\n    secure: \""+f.b64(256)+"\"\n", "secure", "encrypted")
	b.decoy(l2Base, "usr/share/doc/git/git-credential-store.adoc", "Credentials are stored on disk, one per line:\n\n    https://user:pass1234@example.com\n", "https://user", "doc-example")
	b.decoy(l2Ops, "opt/backup/README.md", "Generate a SAS and paste it, e.g.\n\n    ?sv=2022-11-02&ss=b&srt=o&sp=r&se=2030-01-01&sig="+f.pick(alnum, 43)+"%3D\n", "sig=", "doc-example")
	b.decoy(l2App, "opt/app/config/application-local.yml", "app:\n  jwt:\n    public-key: MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"+f.b64(48)+"\n", "public-key", "public-key")
	b.decoy(l2App, "srv/rails/db/seeds.rb", "User.create!(email: 'admin@corp.internal', password: 'password123', admin: true)\n", "password", "default-credential")
	b.decoy(l2Runtime, "srv/web/node_modules/node-telegram-bot-api/README.md", "```js\nconst token = '123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw';\nconst bot = new TelegramBot(token, {polling: true});\n```\n", "const token", "doc-example")
	b.decoy(l2Ops, "opt/bots/notifier/config.example.json", "{\"discord\": {\"webhook\": \"https://discord.com/api/webhooks/<id>/<token>\"}}\n", "discord", "template")
	b.decoy(l2Base, "etc/ssl/certs/java/cacerts", string(f.jks(false, "digicertglobalrootg2", "isrgrootx1", "amazonrootca1")), "", "trust-store")
	b.decoy(l2App, "srv/rails/REVISION", f.hex(40)+"\n", "", "checksum")
	b.decoy(l2App, "srv/web/.next/BUILD_ID", f.pick(b64url, 21)+"\n", "", "checksum")
	b.decoy(l2App, "opt/app/config/tracing.json", "{\"client_token\": \""+f.uuid()+"\", \"installation_id\": \""+f.uuid()+"\"}\n", "client_token", "uuid")
	b.decoy(l2App, "srv/ml/notebooks/README.md", "Never paste tokens in a notebook; use `os.environ[\"REPLICATE_API_TOKEN\"]` and a `.env` file.\n", "REPLICATE", "doc-example")
	b.decoy(l2Base, "usr/share/man/man5/netrc.5", ".SH EXAMPLE\nmachine ftp.example.com login anonymous password guest@example.com\n", "machine", "doc-example")
}
