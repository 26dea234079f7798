// Package v1alpha1 contains the lanmonitor.io/v1alpha1 API: LanMonitor (what
// to watch), IPBlock (what to drop) and LanMonitorNode (the resolved
// configuration and the report of one node).
//
// +kubebuilder:object:generate=true
// +groupName=lanmonitor.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "lanmonitor.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this API with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this API to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
