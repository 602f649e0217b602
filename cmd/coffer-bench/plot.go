package main

import (
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// plotReport draws the cumulative distribution of the latencies in rep on a
// log time axis, with 50 ms, 250 ms and 1 s as dashed lines, and saves it
// as PNG.
func plotReport(rep *Report, path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("coffer-bench %s — %s, commit %s, %d cores", rep.Mode, rep.Date[:10], rep.Commit, rep.Machine.Cores)
	p.X.Label.Text = "latency (ms, log scale)"
	p.Y.Label.Text = "fraction of deliveries at or below"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	var lines []any
	lo, hi := 1e9, 0.0
	for _, s := range rep.Latencies {
		// A distribution whose median is 0 (most deliveries done before
		// the API call returned) has nothing to show on a log axis.
		if len(s.raw) == 0 || s.noPlot || s.P50 == 0 {
			continue
		}
		pts := cdf(s.raw, 1000)
		for _, pt := range pts {
			lo, hi = min(lo, pt.X), max(hi, pt.X)
		}
		lines = append(lines, fmt.Sprintf("%s (p99 %.0f ms)", s.Name, s.P99), pts)
	}
	if len(lines) == 0 {
		return nil
	}
	if err := plotutil.AddLines(p, lines...); err != nil {
		return err
	}
	p.X.Min, p.X.Max = lo, hi
	for _, g := range []float64{50, 250, 1000} {
		if g >= lo && g <= hi*2 {
			l, err := plotter.NewLine(plotter.XYs{{X: g, Y: 0}, {X: g, Y: 1}})
			if err != nil {
				return err
			}
			l.Color = color.Gray{Y: 120}
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
			p.Add(l)
			p.X.Max = max(p.X.Max, g)
		}
	}
	return p.Save(26*vg.Centimeter, 16*vg.Centimeter, path)
}

// cdf turns sorted samples into at most n points of their cumulative
// distribution; values are floored at 0.01 ms for the log axis.
func cdf(sorted []float64, n int) plotter.XYs {
	step := max(1, len(sorted)/n)
	var pts plotter.XYs
	for i := 0; i < len(sorted); i += step {
		pts = append(pts, plotter.XY{X: max(sorted[i], 0.01), Y: float64(i+1) / float64(len(sorted))})
	}
	last := sorted[len(sorted)-1]
	return append(pts, plotter.XY{X: max(last, 0.01), Y: 1})
}
