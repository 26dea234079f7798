package controllers

// ApplyStatus exposes applyStatus to the external tests.
var ApplyStatus = applyStatus
