/* Exits at once with status 3, before reading anything: the cheapest crash
 * there is, for the 10,000-cycle crash loop of test_reliability_faults.py. */
int main(void) { return 3; }
