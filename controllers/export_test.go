package controllers

import "time"

// ApplyStatus exposes applyStatus to the external tests.
var ApplyStatus = applyStatus

// SetClock makes the dashboard read the time from now.
func (d *Dashboard) SetClock(now func() time.Time) { d.now = now }
