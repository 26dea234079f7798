package testenv

// PreviousRelease is the commit of the last released chart (0.2.0): the
// real-cluster test installs its chart and images and upgrades to this
// tree's, and config/crd's compatibility test checks that this tree's CRDs
// keep every field of its CRDs. Move it forward when a release is cut.
const PreviousRelease = "ed30fabdd070d4709756b8c2214099e3648d18f4"
