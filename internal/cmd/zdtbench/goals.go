package main

import "fmt"

// Goal is a target a row's zdt command should meet. Check returns whether
// it is met, the measured value in words, and ok=false when it cannot be
// judged (a command did not run).
type Goal struct {
	Text  string
	Check func(r *RowResult, all map[string]*RowResult) (met bool, detail string, ok bool)
}

// GoalResult is a judged goal.
type GoalResult struct {
	Goal   string `json:"goal"`
	Result string `json:"result"` // met, missed, n/a
	Detail string `json:"detail,omitempty"`
}

func judge(r *RowResult, all map[string]*RowResult) {
	r.Goals = nil
	for _, g := range r.goals {
		gr := GoalResult{Goal: g.Text, Result: "n/a"}
		if r.Status == "ok" {
			if met, detail, ok := g.Check(r, all); ok {
				gr.Result, gr.Detail = "missed", detail
				if met {
					gr.Result = "met"
				}
			}
		}
		r.Goals = append(r.Goals, gr)
	}
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

func fmtX(x float64) string {
	switch {
	case x == 0:
		return "—"
	case x < 0.095:
		return fmt.Sprintf("%.3f×", x)
	}
	return fmt.Sprintf("%.2f×", x)
}

// vsFastestPeer: zdt's median ≤ max × the fastest peer's.
func vsFastestPeer(max float64) Goal {
	return Goal{
		Text: fmt.Sprintf("≤ %g× the fastest peer", max),
		Check: func(r *RowResult, _ map[string]*RowResult) (bool, string, bool) {
			z, p := r.zdt(), r.fastestPeer()
			if z == nil || p == nil {
				return false, "", false
			}
			x := ratio(z.Median, p.Median)
			return x <= max, fmt.Sprintf("%s %s", fmtX(x), p.Label), true
		},
	}
}

// throughputVsPeer: zdt moves the row's bytes at ≥ min × the fastest
// peer's rate (same bytes, so: peer time ÷ zdt time ≥ min).
func throughputVsPeer(min float64) Goal {
	return Goal{
		Text: fmt.Sprintf("throughput ≥ %.1f× the peer's", min),
		Check: func(r *RowResult, _ map[string]*RowResult) (bool, string, bool) {
			z, p := r.zdt(), r.fastestPeer()
			if z == nil || p == nil {
				return false, "", false
			}
			x := ratio(p.Median, z.Median)
			return x >= min, fmt.Sprintf("%.2f× %s", x, p.Label), true
		},
	}
}

// vsFloor: zdt's median ≤ max × the floor's.
func vsFloor(max float64) Goal {
	return Goal{
		Text: fmt.Sprintf("≤ %.1f× the floor", max),
		Check: func(r *RowResult, _ map[string]*RowResult) (bool, string, bool) {
			z, f := r.zdt(), r.floor()
			if z == nil || f == nil {
				return false, "", false
			}
			x := ratio(z.Median, f.Median)
			return x <= max, fmt.Sprintf("%s floor", fmtX(x)), true
		},
	}
}

// wallUnder: zdt's median ≤ secs.
func wallUnder(secs float64) Goal {
	return Goal{
		Text: fmt.Sprintf("≤ %g s", secs),
		Check: func(r *RowResult, _ map[string]*RowResult) (bool, string, bool) {
			z := r.zdt()
			if z == nil {
				return false, "", false
			}
			return z.Median <= secs, fmt.Sprintf("%.2f s", z.Median), true
		},
	}
}

// rssUnder: zdt's peak RSS over all runs < limit bytes.
func rssUnder(limit int64) Goal {
	return Goal{
		Text: "peak RSS < " + humanBytes(limit),
		Check: func(r *RowResult, _ map[string]*RowResult) (bool, string, bool) {
			z := r.zdt()
			if z == nil || z.PeakRSS == 0 {
				return false, "", false
			}
			return z.PeakRSS < limit, humanBytes(z.PeakRSS), true
		},
	}
}

// vsRow: zdt's median ≤ max × zdt's median in another row.
func vsRow(name string, max float64) Goal {
	return Goal{
		Text: fmt.Sprintf("≤ %g× row %s", max, name),
		Check: func(r *RowResult, all map[string]*RowResult) (bool, string, bool) {
			z := r.zdt()
			o, ok := all[name]
			if z == nil || !ok || o.zdt() == nil {
				return false, "", false
			}
			x := ratio(z.Median, o.zdt().Median)
			return x <= max, fmt.Sprintf("%s %s", fmtX(x), name), true
		},
	}
}

// flatVsRow: zdt's median ≤ factor × another row's zdt median + slack
// seconds (does not grow with the workload the rows differ in).
func flatVsRow(name string, factor, slack float64) Goal {
	return Goal{
		Text: fmt.Sprintf("≤ %g× row %s + %g s", factor, name, slack),
		Check: func(r *RowResult, all map[string]*RowResult) (bool, string, bool) {
			z := r.zdt()
			o, ok := all[name]
			if z == nil || !ok || o.zdt() == nil {
				return false, "", false
			}
			lim := factor*o.zdt().Median + slack
			return z.Median <= lim, fmt.Sprintf("%.2f s vs %.2f s", z.Median, o.zdt().Median), true
		},
	}
}
