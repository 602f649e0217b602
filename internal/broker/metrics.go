package broker

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var (
	deliveries = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "coffer_deliveries_total",
		Help: "Delivery records, by action: files queued for an agent (delivery.send), changes acknowledged by agents (delivery.apply, delivery.rotate, delivery.revoke), containers gone (delivery.remove).",
	}, []string{"action"})
	deliveryLatency = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "coffer_delivery_ack_seconds",
		Help:    "Time from the server queuing a container's desired state to the agent acknowledging it, less the time the agent held the acknowledgement back at the server's asking (a large fan-out's Batch.ack_hold_ms).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	})
)
