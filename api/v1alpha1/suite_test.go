package v1alpha1_test

import (
	"testing"

	"github.com/lanmonitor/lanmonitor/internal/testenv"
)

// env is the API server shared by the tests of this package.
var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }
