package broker

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	deliveries = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "coffer_deliveries_total",
		Help: "Changes acknowledged by agents, by action (delivery.apply, delivery.rotate, delivery.revoke, delivery.remove).",
	}, []string{"action"})
	deliveryLatency = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "coffer_delivery_ack_seconds",
		Help:    "Time from the server queuing a container's desired state to the agent acknowledging it.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	})
)
