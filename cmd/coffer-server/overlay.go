package main

import (
	"github.com/spf13/pflag"

	"coffer/internal/server"
)

type pflagFlag = pflag.Flag

// overlay copies the field behind flag name from flags into cfg.
func overlay(cfg *server.Config, flags server.Config, name string) {
	switch name {
	case "data-dir":
		cfg.DataDir = flags.DataDir
	case "listen":
		cfg.Listen = flags.Listen
	case "san":
		cfg.SANs = flags.SANs
	case "master-key-file":
		cfg.MasterKeyFile = flags.MasterKeyFile
	case "max-versions":
		cfg.MaxVersions = flags.MaxVersions
	case "max-value-size":
		cfg.MaxValueSize = flags.MaxValueSize
	case "agent-cert-ttl":
		cfg.AgentCertTTL = flags.AgentCertTTL
	case "log-level":
		cfg.LogLevel = flags.LogLevel
	}
}
