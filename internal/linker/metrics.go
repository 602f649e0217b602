package linker

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	upstreamUp = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "coffer_keystore_up",
		Help: "1 if the upstream keystore answered its last check, 0 if it is degraded (unreachable, throttling, refusing Coffer's credentials).",
	}, []string{"upstream"})
	degradedItems = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "coffer_keystore_degraded_items",
		Help: "Linked items of the upstream that cannot be checked or read now; their containers keep the last value.",
	}, []string{"upstream"})
	checks = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "coffer_keystore_checks_total",
		Help: "Change checks of an upstream's linked items (one per poll or hint), by result.",
	}, []string{"upstream", "result"})
	reads = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "coffer_keystore_reads_total",
		Help: "Reads of an item's value from the upstream: one per upstream version, however many containers use it, plus one per link.",
	}, []string{"upstream"})
	syncs = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "coffer_keystore_syncs_total",
		Help: "New upstream versions stored as new versions of linked secrets.",
	}, []string{"upstream"})
	revocations = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "coffer_keystore_revocations_total",
		Help: "Linked secrets revoked from containers because the upstream deleted or disabled their item or denied access to it.",
	}, []string{"upstream"})
)
