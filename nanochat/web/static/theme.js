// The theme before the first paint, so a dark page does not flash white (loaded in <head>, before the CSS applies).
document.documentElement.dataset.theme = localStorage.getItem("nanochat.theme")
  || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
